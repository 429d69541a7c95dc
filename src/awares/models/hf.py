"""HF transformers backend: batched generation with the turn-1 KV cache carried into turn 2."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, Cache, DynamicCache
from transformers.generation.streamers import BaseStreamer

from ..errors import InputError, ModelLoadError
from ..hub import resolve_model
from ..protocol import Message, images_of
from .attention import LastTokenAttention
from .backend import GREEDY, Sampling, Stream, Turn
from .chat import ChatTemplate
from .decoding import CallGrammar, CallLimit, GreedyDecoder
from .default import default_model_dir
from .families import family_of
from .processor import load_processor

_REQUIRED_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json")


@dataclass
class Session:
    """State after a batched generation: token ids, attention mask, image grids per row and the KV cache.

    ``sequences`` are prompt and generated ids (left padded); ``attention_mask`` is 0 on padding, on
    tokens generated after a row's end of turn and on the holes jump-forward decoding leaves; the
    cache holds the first columns (all but the last, or all but a call's unforwarded close), and the
    next turn prefills the rest.
    """

    conversations: list[list[Message]]
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    grids: list[torch.Tensor]
    cache: Cache
    ended: list[bool]


@dataclass
class RowSessions:
    """The sessions of a hybrid model's batch, one per conversation, each decoded alone
    (``Family.hybrid``: padding between turns or rows would change the recurrent state)."""

    rows: list[Session]


def _joined(turns: list[Turn]) -> Turn:
    """The turns of conversations decoded one at a time, as one turn over all of them."""
    confidence = [c for t in turns for c in (t.confidence or [])] or None
    attention = [a for t in turns for a in (t.attention or [])] or None
    session = RowSessions([t.session for t in turns])
    return Turn(
        [x for t in turns for x in t.texts], [x for t in turns for x in t.ids], session, None, confidence, attention
    )


class _RowStreamer(BaseStreamer):
    """``generate``'s streamer for a batch: each row's ids so far, until its end token, to ``stream``."""

    def __init__(self, stream: Stream, eos_ids: set[int]):
        self.stream, self.eos_ids = stream, eos_ids
        self.rows: list[list[int]] | None = None  # None until the prompt, which generate puts first
        self.ended: list[bool] = []

    def put(self, value: torch.Tensor) -> None:
        if self.rows is None:
            self.rows, self.ended = [[] for _ in range(value.shape[0])], [False] * value.shape[0]
            return
        for row, token in enumerate(value.tolist()):
            if self.ended[row] or token in self.eos_ids:
                self.ended[row] = True
                continue
            self.rows[row].append(token)
            self.stream(row, list(self.rows[row]))

    def end(self) -> None:
        pass


def _row(limits: list[CallLimit] | None, row: int) -> list[CallLimit] | None:
    return [limits[row]] if limits else None


def _row_stream(stream: Stream | None, row: int) -> Stream | None:
    """``stream`` for a conversation decoded alone that is row ``row`` of the batch."""
    return (lambda _, ids: stream(row, ids)) if stream else None


def model_dir(name: str | Path, revision: str | None = None) -> Path:
    """The folder of model ``name`` (a local folder, or a hub id resolved in the hub cache), checked
    to hold a checkpoint before anything in it is read: ``ModelLoadError`` in one line otherwise."""
    path = resolve_model(name, revision)
    if not path.exists():
        raise ModelLoadError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{path} is not a directory: a model is a folder with config.json and weights")
    missing = [name for name in _REQUIRED_FILES if not (path / name).is_file()]
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        missing.append("model weights (*.safetensors)")
    if missing:
        raise ModelLoadError(f"model directory {path} is missing {', '.join(missing)}")
    return path


def check_device(device: str) -> str:
    """``device`` if torch knows it and this machine has it, else an ``InputError``."""
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: no CUDA GPU is available here")
    if kind == "cuda" and (torch.device(device).index or 0) >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if kind not in ("cpu", "cuda"):
        raise InputError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    return device


class HFBackend:
    """A local checkpoint of a supported family (``models.families``) run with transformers (CPU,
    or CUDA with bf16).

    Greedy turns run ``GreedyDecoder``, which appends a tool call's fixed syntax in one forward pass
    once the model has committed to a call (``jump_forward``; off: ``generate``, token by token).
    Sampled turns always run ``generate``. A hybrid family's conversations are decoded one at a
    time, with no shared system-prompt cache and no column forwarded ahead of a decision."""

    reads_attention = True  # generate(attention_layer=...): the training-free policy can run on it

    def __init__(self, model: Any, processor: Any, source: Path | None = None, jump_forward: bool = True):
        self.model = model.eval()
        self.family = family_of(model)
        self.template = ChatTemplate(processor, self.family)
        self.source = source
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # whatever processor was passed in: see load_processor
        self.image_token_id = processor.image_token_id
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = self.tokenizer.pad_token_id
        self.jump_forward = jump_forward
        self.grammar = CallGrammar.from_tokenizer(self.tokenizer)
        self.decoder = GreedyDecoder(
            model,
            self.grammar,
            self.eos_ids,
            self._end_of_turn(),
            self.pad_id,
            self.image_token_id,
            lookahead=not self.family.hybrid,
        )
        self._prefixes: dict[str, tuple[torch.Tensor, Cache]] = {}  # system turn -> its ids and KV

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        jump_forward: bool = True,
        revision: str | None = None,
    ) -> HFBackend:
        """Load the checkpoint in ``path``: a local folder or a hub id (``ORG/NAME``, at ``revision``),
        read from the hub cache or downloaded into it; without ``path``, the shipped tiny AwaRes policy.
        ``device`` defaults to CUDA when present, ``dtype`` to bfloat16 on CUDA and float32 on CPU."""
        path = model_dir(default_model_dir() if path is None else path, revision)
        device = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = (
            getattr(torch, dtype) if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        )
        try:  # load_processor refuses a model type awares does not run
            processor = load_processor(path)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype, local_files_only=True)
        except Exception as err:  # any failure to read user-supplied files is reported, not raised
            raise ModelLoadError(f"cannot load model from {path}: {err}") from err
        return cls(model.to(device), processor, path, jump_forward)

    def describe(self) -> dict[str, Any]:
        """What identifies this model's answers: its directory, a SHA-256 of each weight file (a
        retrained checkpoint in the same place differs), dtype and device."""
        source = str(self.source.resolve()) if self.source is not None else None
        return {
            "path": source,
            "weights": self._weight_digests,
            "dtype": str(self.model.dtype),
            "device": str(self.device),
            "jump_forward": self.jump_forward and self.grammar is not None,
        }

    @functools.cached_property
    def _weight_digests(self) -> dict[str, str]:
        """SHA-256 per weight file, read once per loaded model (seconds for a 7B checkpoint)."""
        digests = {}
        if self.source is not None:
            for file in sorted([*self.source.glob("*.safetensors"), *self.source.glob("*.bin")]):
                with file.open("rb") as f:
                    digests[file.name] = hashlib.file_digest(f, "sha256").hexdigest()
        return digests

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _end_of_turn(self) -> int:
        """The end token the chat template closes an assistant turn with."""
        reply = {"role": "assistant", "content": [{"type": "text", "text": "a"}]}
        text = self._prompt([{"role": "user", "content": [{"type": "text", "text": "q"}]}, reply], generation=False)
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return next((i for i in reversed(ids) if i in self.eos_ids), min(self.eos_ids))

    def _prompt(self, messages: list[Message], generation: bool = True) -> str:
        return self.template.prompt(messages, generation)

    def _encode(self, texts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        return self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)

    def generate(
        self,
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        attention_layer: int | None = None,
        limits: list[CallLimit] | None = None,
        sampling: Sampling = GREEDY,
        output_logits: bool = False,
    ) -> Turn:
        """Turn 1: prefill each conversation (batched, left padded) and decode; ``stream(row, ids)``
        gets each answering row's ids so far as they are decoded. With ``attention_layer`` (greedy
        only), ``Turn.attention`` holds each row's last prompt token's attention over its visual
        tokens at that layer (``LastTokenAttention``). ``limits`` bound each row's tool call while
        it is decoded (greedy turns; sampled ones only where no row may call). ``output_logits``
        decodes with transformers' ``generate`` and keeps its logits per step (``Turn.logits``)."""
        if self.family.hybrid and len(conversations) > 1:
            return _joined(
                [
                    self.generate(
                        [c],
                        max_new_tokens,
                        _row_stream(stream, row),
                        attention_layer,
                        _row(limits, row),
                        sampling,
                        output_logits,
                    )  # fmt: skip
                    for row, c in enumerate(conversations)
                ]
            )
        inputs = self._encode(
            [self._prompt(c) for c in conversations], [im for c in conversations for im in images_of(c)]
        )
        grids = self._split_grids(inputs.get("image_grid_thw"), [len(images_of(c)) for c in conversations])
        jump = self._jump_forward(sampling, output_logits)
        if attention_layer is None:
            if jump and not self.family.hybrid:
                inputs = self._after_system_turn(conversations, inputs)
            return self._decode(conversations, inputs, grids, max_new_tokens, stream, sampling, limits, output_logits)
        if not jump:
            raise InputError("attention is read on greedy turns only (jump-forward on, no sampling)")
        with LastTokenAttention(self.model, attention_layer, inputs["attention_mask"]) as probe:
            turn = self._decode(conversations, inputs, grids, max_new_tokens, stream, sampling, limits)
        visual = inputs["input_ids"] == self.image_token_id
        turn.attention = [probe.weights[row][visual[row]] for row in range(len(conversations))]
        return turn

    def _suppress_calls(self, limits: list[CallLimit] | None) -> dict[str, Any]:
        """``generate``'s option that keeps a call from starting where no row may call."""
        if self.grammar is None or not limits or any(limit.allowed([]) for limit in limits):
            return {}
        return {"begin_suppress_tokens": [self.grammar.prefix[0]]}

    def _jump_forward(self, sampling: Sampling, output_logits: bool = False) -> bool:
        """Whether a turn runs ``GreedyDecoder`` (jump-forward on, greedy, no logits kept)."""
        return self.jump_forward and sampling.greedy and not output_logits

    def _after_system_turn(self, conversations: list[list[Message]], inputs: dict[str, Any]) -> dict[str, Any]:
        """``inputs`` with the KV of a system turn that every conversation opens with, computed once
        per system prompt (the protocol's prompt is as long as a low-res view's tokens): each row's
        left padding moves after that turn, whose columns become the cache. Unchanged where the
        conversations open otherwise."""
        first = conversations[0][0]
        if first["role"] != "system" or any(c[0] != first for c in conversations):
            return inputs
        key = repr(first["content"])
        if key not in self._prefixes:
            text = self._prompt([first], generation=False)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(self.device)
            positions = torch.arange(ids.shape[1], device=self.device).expand(3, 1, -1)
            with torch.inference_mode():
                cache = self.model.model(input_ids=ids, position_ids=positions, use_cache=True).past_key_values
            self._prefixes[key] = (ids[0], cache)
        prefix, cache = self._prefixes[key]
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        rows, width, n = ids.shape[0], ids.shape[1], len(prefix)
        starts = (width - mask.sum(dim=1)).tolist()
        if not all(torch.equal(ids[row, start : start + n], prefix) for row, start in enumerate(starts)):
            return inputs
        moved_ids, moved_mask = torch.full_like(ids, self.pad_id), torch.zeros_like(mask)
        for row, start in enumerate(starts):
            moved_ids[row, :n], moved_mask[row, :n] = prefix, 1
            moved_ids[row, start + n :], moved_mask[row, start + n :] = ids[row, start + n :], 1
        # The first update copies the shared prefix into each row (torch.cat): it is never written into.
        batch_cache = DynamicCache(config=self.model.config.get_text_config())
        for index, layer in enumerate(cache.layers):
            batch_cache.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), index)
        return {**inputs, "input_ids": moved_ids, "attention_mask": moved_mask, "past_key_values": batch_cache}

    def extend(
        self,
        session: Session,
        rows: list[int],
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        limits: list[CallLimit] | None = None,
        sampling: Sampling = GREEDY,
        output_logits: bool = False,
    ) -> Turn:
        """Turn 2 for ``rows`` of ``session``: each conversation is that row's conversation plus new
        messages (assistant turn as decoded, then a user turn). Only the new tokens are prefilled;
        the turn-1 cache is reused, and only the new images go through the vision encoder.
        The session's cache is consumed: a session can be extended once."""
        if isinstance(session, RowSessions):
            return _joined(
                [
                    self.extend(
                        session.rows[r],
                        [0],
                        [c],
                        max_new_tokens,
                        _row_stream(stream, i),
                        _row(limits, i),
                        sampling,
                        output_logits,
                    )  # fmt: skip
                    for i, (r, c) in enumerate(zip(rows, conversations))
                ]
            )
        index = torch.tensor(rows, device=self.device)
        cache = session.cache
        if rows != list(range(len(session.conversations))):
            cache.batch_select_indices(index)
        tails = [self._tail(session, r, conv) for r, conv in zip(rows, conversations)]
        added = [images_of(conv)[len(images_of(session.conversations[r])) :] for r, conv in zip(rows, conversations)]
        new_images = [im for row_images in added for im in row_images]
        tail = self._encode(tails, new_images)
        input_ids = torch.cat([session.sequences[index], tail["input_ids"]], dim=1)
        attention_mask = torch.cat([session.attention_mask[index], tail["attention_mask"]], dim=1)
        new_grids = self._split_grids(tail.get("image_grid_thw"), [len(a) for a in added])
        grids = [torch.cat([session.grids[r], g]) for r, g in zip(rows, new_grids)]
        inputs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": (input_ids == self.image_token_id).int(),
            "past_key_values": cache,
        }
        if new_images:
            # Encode only the new images; the ids carry the grids of every image so that 3-D rope
            # positions are computed over the whole two-turn sequence.
            with torch.inference_mode():
                features = self.model.get_image_features(tail["pixel_values"], tail["image_grid_thw"], return_dict=True)
            inputs["mm_encoder_outputs"] = {"image": features}
        all_grids = torch.cat(grids) if any(len(g) for g in grids) else None
        if all_grids is not None:
            inputs["image_grid_thw"] = all_grids
        return self._decode(conversations, inputs, grids, max_new_tokens, stream, sampling, limits, output_logits)

    def _tail(self, session: Session, row: int, conversation: list[Message]) -> str:
        """Template text that follows row ``row``'s generated ids in ``conversation``."""
        tail = self.template.continuation(session.conversations[row], conversation)
        if session.ended[row]:
            eos_text = self.tokenizer.decode([int(session.sequences[row][session.attention_mask[row].nonzero()[-1]])])
            tail = tail.removeprefix(eos_text)
        return tail

    def _split_grids(self, grid: torch.Tensor | None, counts: list[int]) -> list[torch.Tensor]:
        if grid is None:
            return [torch.zeros((0, 3), dtype=torch.long, device=self.device) for _ in counts]
        return list(torch.split(grid, counts))

    def _decode(
        self,
        conversations: list[list[Message]],
        inputs: dict[str, Any],
        grids: list[torch.Tensor],
        max_new_tokens: int,
        stream: Stream | None,
        sampling: Sampling,
        limits: list[CallLimit] | None = None,
        output_logits: bool = False,
    ) -> Turn:
        if self._jump_forward(sampling, output_logits):
            decoded = self.decoder.decode(inputs, max_new_tokens, stream, limits)
            texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in decoded.generated]
            session = Session(
                conversations, decoded.sequences, decoded.attention_mask, grids, decoded.cache, decoded.ended
            )
            return Turn(texts, decoded.generated, session, confidence=decoded.confidence)
        if sampling.seed is not None:  # one worker thread runs the model: the global generator is its own
            torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                **sampling.generate_kwargs(),
                max_new_tokens=max_new_tokens,
                output_logits=output_logits,
                return_dict_in_generate=True,
                use_cache=True,
                pad_token_id=self.pad_id,
                streamer=_RowStreamer(stream, self.eos_ids) if stream else None,
                **self._suppress_calls(limits),
            )
        prompt_len = inputs["input_ids"].shape[1]
        generated = out.sequences[:, prompt_len:]
        is_eos = torch.isin(generated, torch.tensor(sorted(self.eos_ids), device=generated.device))
        # Columns after a row's first end-of-turn token are padding for that row.
        after_end = (is_eos.cumsum(dim=1) - is_eos.int()) > 0
        mask = torch.cat([inputs["attention_mask"], (~after_end).long()], dim=1)
        ended = is_eos.any(dim=1).tolist()
        texts, rows = [], []
        for row in range(generated.shape[0]):
            ids = generated[row][~after_end[row]]
            rows.append(ids.tolist())
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
        session = Session(conversations, out.sequences, mask, grids, out.past_key_values, ended)
        return Turn(texts, rows, session, getattr(out, "logits", None))

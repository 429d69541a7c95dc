"""Greedy decoding over transformers' KV cache that jumps over the tool call's fixed syntax.

Why not ``generate``: it feeds the model one token per forward pass, and a logits processor can
only mask the next token; it can neither append several known tokens in one pass nor read two
positions of one pass. Once the model has committed to a call (its first token is the call's first
token), the rest of the syntax is known, so this loop appends it in one pass, picks each crop id
among the ids still valid (every call parses), and reads both the close-or-continue decision and the
next id from one pass over ``[id, *separator]``. A one-crop call costs three forward passes (the
prefill, the syntax, the id) instead of one per token. Without ``lookahead`` (a hybrid model, whose
recurrent state cannot take back a separator forwarded ahead of a close) the decision is read after
the id alone and the separator forwarded only when the call goes on: one pass more per further id.
Answers are decoded one token per pass, as ``generate`` would. Sampled decoding (RL rollouts) stays
with ``generate``: rollouts must be the policy's own draws, forced tokens included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Cache, DynamicCache

from ..crops import ALL, CROP_IDS, CROP_NAMES
from ..protocol import format_call


def _common_prefix(sequences: list[tuple[int, ...]]) -> int:
    n = 0
    while all(len(s) > n and s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


@dataclass(frozen=True)
class CallGrammar:
    """The canonical call ``GET_CROPS: ['0', '5']`` in one tokenizer's ids: ``prefix``, then each
    crop id's single token, ``separator`` between ids, ``close`` after the last."""

    prefix: tuple[int, ...]
    crop_tokens: dict[str, int]
    separator: tuple[int, ...]
    close: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> CallGrammar | None:
        """The grammar read off ``tokenizer``'s encoding of every one- and two-crop call, or ``None``
        where the call does not split into those pieces (then calls are decoded token by token)."""

        def encode(crop_ids: list[str]) -> tuple[int, ...]:
            return tuple(tokenizer(format_call(crop_ids), add_special_tokens=False).input_ids)

        singles = {cid: encode([cid]) for cid in CROP_IDS}
        head = _common_prefix(list(singles.values()))
        tail = _common_prefix([s[::-1] for s in singles.values()])
        middles = {cid: s[head : len(s) - tail] for cid, s in singles.items()}
        if not head or not tail or any(len(m) != 1 for m in middles.values()):
            return None
        first = singles[CROP_IDS[0]]
        pair = encode(["0", "1"])
        grammar = cls(
            prefix=first[:head],
            crop_tokens={cid: m[0] for cid, m in middles.items()},
            separator=pair[head + 1 : len(pair) - tail - 1],
            close=first[len(first) - tail :],
        )
        distinct = len(set(grammar.crop_tokens.values())) == len(CROP_IDS)
        pairs = [[a, b] for a in CROP_NAMES for b in CROP_NAMES if a != b]
        if not (distinct and grammar.separator and all(encode(p) == grammar.encode(p) for p in pairs)):
            return None
        return grammar

    def length(self, crops: int) -> int:
        """Tokens of a call naming ``crops`` crops, its close included."""
        return len(self.prefix) + crops + (crops - 1) * len(self.separator) + len(self.close)

    def encode(self, crop_ids: list[str]) -> tuple[int, ...]:
        """The ids of the canonical call for ``crop_ids``."""
        ids = [*self.prefix, self.crop_tokens[crop_ids[0]]]
        for cid in crop_ids[1:]:
            ids += [*self.separator, self.crop_tokens[cid]]
        return (*ids, *self.close)


@dataclass(frozen=True)
class CallLimit:
    """What one row's tool call may fetch: crops whose visual tokens (``costs``) add up to at most
    ``tokens``, and at most ``crops`` of them (None: no limit). Where not even one crop fits, the
    row makes no call: the call's first token is masked and the model answers from what it has."""

    costs: dict[str, int] = field(default_factory=dict)
    tokens: int | None = None
    crops: int | None = None

    def allowed(self, chosen: list[str]) -> list[str]:
        """The crop ids that may follow ``chosen`` (``all`` only first), in the grammar's order."""
        if (self.crops is not None and len(chosen) >= self.crops) or ALL in chosen:
            return []
        candidates = [c for c in CROP_NAMES if c not in chosen] if chosen else list(CROP_IDS)
        if self.tokens is None:
            return candidates
        left = self.tokens - sum(self.costs[c] for c in chosen)
        return [c for c in candidates if self.costs[c] <= left]


NO_CALL = CallLimit(crops=0)  # the single-pass policies: the model answers, never calls


@dataclass
class _Row:
    """One row's decoding state: tokens chosen, tokens waiting for a forward pass, and its call."""

    generated: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # forwarded in the next pass
    tail: list[int] = field(default_factory=list)  # final tokens, never forwarded in this turn
    crops: list[str] | None = None  # the call's crop ids once the row has committed to a call
    limit: CallLimit = field(default_factory=CallLimit)
    streamed: int = 0  # how many generated ids were passed to ``stream``
    deciding: bool = False  # without lookahead: the last pass ended on a crop id (close or go on)
    done: bool = False
    ended: bool = False


@dataclass
class Decoded:
    """Prompt and generated columns (holes are padding with mask 0), the cache over the forwarded
    columns, and per row the generated ids through its end token."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    cache: Cache
    generated: list[list[int]]
    ended: list[bool]
    confidence: list[float]  # per row, the probability of its first token


def _text_positions(mask: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """3-D rope positions of text columns: the row's count of real tokens before, plus its offset."""
    return ((mask.long().cumsum(-1) - 1).clamp(min=0) + deltas)[None].expand(3, -1, -1)


class GreedyDecoder:
    """Batched greedy decoding of one turn of a supported family's model, with jump-forward tool calls."""

    def __init__(
        self,
        model: Any,
        grammar: CallGrammar | None,
        eos_ids: set[int],
        end_of_turn: int,
        pad_id: int,
        image_token_id: int,
        lookahead: bool = True,
    ):
        self.model, self.grammar, self.eos_ids, self.end_of_turn = model, grammar, eos_ids, end_of_turn
        self.pad_id, self.image_token_id, self.lookahead = pad_id, image_token_id, lookahead

    @torch.inference_mode()
    def decode(
        self,
        inputs: dict[str, Any],
        max_new_tokens: int,
        stream: Callable[[int, list[int]], None] | None = None,
        limits: list[CallLimit] | None = None,
    ) -> Decoded:
        """Decode from ``inputs`` (prompt ids and mask, the new images' pixels or encoder outputs,
        every image's grid, and the previous turn's cache if any) until every row has ended.
        ``stream(row, ids)`` gets each row's ids so far (end token excluded) after each step, for
        rows that are not tool calls. ``limits`` bound each row's call."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        cache = inputs.get("past_key_values") or DynamicCache(config=self.model.config.get_text_config())
        cached = cache.get_seq_length()
        grids = inputs.get("image_grid_thw")
        if grids is not None:
            types = (ids == self.image_token_id).int()
            positions, deltas = self.model.model.get_rope_index(
                ids, mm_token_type_ids=types, image_grid_thw=grids, attention_mask=mask
            )
        else:
            deltas = torch.zeros((ids.shape[0], 1), dtype=torch.long, device=ids.device)
            positions = _text_positions(mask, deltas)
        vision = {k: inputs[k] for k in ("pixel_values", "image_grid_thw") if "pixel_values" in inputs}
        if "mm_encoder_outputs" in inputs:
            vision["mm_encoder_outputs"] = inputs["mm_encoder_outputs"]
        logits = self.model(
            input_ids=ids[:, cached:],
            attention_mask=mask,
            position_ids=positions[:, :, cached:],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **vision,
        ).logits
        rows = [_Row(limit=limit) for limit in (limits or [CallLimit()] * ids.shape[0])]
        confidence = logits[:, -1].float().softmax(dim=-1).max(dim=-1).values.tolist()
        jump = self.grammar is not None and self._fits(1, max_new_tokens)
        for row, row_logits in zip(rows, logits[:, -1]):
            self._first(row, row_logits, max_new_tokens, jump)
        self._stream(rows, stream)
        while any(not r.done for r in rows):
            width = max(len(r.pending) for r in rows)
            block = [[self.pad_id] * (width - len(r.pending)) + r.pending for r in rows]
            block_mask = [[0] * (width - len(r.pending)) + [1] * len(r.pending) for r in rows]
            ids = torch.cat([ids, torch.tensor(block, device=ids.device)], dim=1)
            mask = torch.cat([mask, torch.tensor(block_mask, device=mask.device, dtype=mask.dtype)], dim=1)
            logits = self.model(
                input_ids=ids[:, -width:],
                attention_mask=mask,
                position_ids=_text_positions(mask, deltas)[:, :, -width:],
                past_key_values=cache,
                use_cache=True,
            ).logits
            for i, row in enumerate(rows):
                if row.pending and self._next(row, logits[i], max_new_tokens):
                    # the separator was forwarded ahead of a call that closed: a hole now
                    ids[i, -len(self.grammar.separator) :] = self.pad_id
                    mask[i, -len(self.grammar.separator) :] = 0
            self._stream(rows, stream)
        width = max(len(r.tail) for r in rows)
        tail = [[self.pad_id] * (width - len(r.tail)) + r.tail for r in rows]
        tail_mask = [[0] * (width - len(r.tail)) + [1] * len(r.tail) for r in rows]
        ids = torch.cat([ids, torch.tensor(tail, device=ids.device)], dim=1)
        mask = torch.cat([mask, torch.tensor(tail_mask, device=mask.device, dtype=mask.dtype)], dim=1)
        return Decoded(ids, mask, cache, [r.generated for r in rows], [r.ended for r in rows], confidence)

    def _stream(self, rows: list[_Row], stream: Callable[[int, list[int]], None] | None) -> None:
        """Each answering row's ids so far, to ``stream``, where they grew since the last call."""
        for i, row in enumerate(rows):
            if stream and row.crops is None and len(row.generated) > row.streamed:
                row.streamed = len(row.generated)
                stream(i, [t for t in row.generated if t not in self.eos_ids])

    def _fits(self, crops: int, max_new_tokens: int) -> bool:
        """Whether a call naming ``crops`` crops, and its end token, fit in ``max_new_tokens``."""
        return self.grammar.length(crops) + 1 <= max_new_tokens

    def _first(self, row: _Row, logits: torch.Tensor, max_new_tokens: int, jump: bool) -> None:
        if self.grammar is not None and not row.limit.allowed([]):  # no crop fits: no call
            logits = logits.clone()
            logits[self.grammar.prefix[0]] = float("-inf")
        token = int(logits.argmax())
        if jump and token == self.grammar.prefix[0]:
            row.crops = []
            row.generated = list(self.grammar.prefix)
            row.pending = list(self.grammar.prefix)
        else:
            self._append(row, token, max_new_tokens)

    def _next(self, row: _Row, logits: torch.Tensor, max_new_tokens: int) -> bool:
        """Read the pass over ``row.pending`` (right-aligned in ``logits``) and choose what follows;
        True when a call closed after a separator that was forwarded ahead."""
        row.pending = []
        if row.crops is None:
            self._append(row, int(logits[-1].argmax()), max_new_tokens)
            return False
        grammar = self.grammar
        if row.crops and self.lookahead:  # the pass was [id, *separator]: close after the id, or go on
            if self._closes(row, logits[-1 - len(grammar.separator)]):
                row.generated = row.generated[: len(row.generated) - len(grammar.separator)]
                self._close(row, [])
                return True
        elif row.deciding:  # the pass ended on the id: close, or forward the separator
            row.deciding = False
            if self._closes(row, logits[-1]):
                self._close(row, [])
            else:
                row.generated += grammar.separator
                row.pending = list(grammar.separator)
            return False
        # the pass was the prefix (the first id, ``all`` included) or a separator (the next id)
        allowed = row.limit.allowed(row.crops)
        scores = logits[-1, [grammar.crop_tokens[c] for c in allowed]]
        crop = allowed[int(scores.argmax())]
        row.crops.append(crop)
        token = grammar.crop_tokens[crop]
        if not row.limit.allowed(row.crops) or not self._fits(len(row.crops) + 1, max_new_tokens):
            self._close(row, [token])
        elif self.lookahead:
            row.generated += [token, *grammar.separator]
            row.pending = [token, *grammar.separator]
        else:
            row.generated.append(token)
            row.pending, row.deciding = [token], True
        return False

    def _closes(self, row: _Row, decision: torch.Tensor) -> bool:
        """Whether the call closes after its last id: no crop may follow, or the close beats the separator."""
        close, separator = self.grammar.close[0], self.grammar.separator[0]
        return not row.limit.allowed(row.crops) or bool(decision[close] >= decision[separator])

    def _close(self, row: _Row, last: list[int]) -> None:
        """End the call after ``last``: the close and the end token follow unforwarded."""
        row.tail = [*last, *self.grammar.close, self.end_of_turn]
        row.generated += row.tail
        row.done = row.ended = True

    def _append(self, row: _Row, token: int, max_new_tokens: int) -> None:
        row.generated.append(token)
        if token in self.eos_ids or len(row.generated) >= max_new_tokens:
            row.tail, row.done, row.ended = [token], True, token in self.eos_ids
        else:
            row.pending = [token]

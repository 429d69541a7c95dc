"""The two-turn AwaRes engine and the single-pass baselines, over any backend with ``generate``/``extend``."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from PIL import Image
from tqdm.auto import tqdm

from .crops import ALL, DEFAULT_MIN_CROP_SIDE, VisionGrid, extract_crops, low_res_view
from .errors import InputError
from .images import load_image
from .models.backend import Stream
from .protocol import (
    SYSTEM_PROMPT,
    Answer,
    CropCall,
    Message,
    ParseError,
    format_call,
    may_become_call,
    parse_response,
    turn1_messages,
    turn2_messages,
)

Policy = Literal["full", "low", "crops", "oracle"]
# Called with a request's index in ``answer_batch`` and its answer text so far.
AnswerStream = Callable[[int, str], None]
POLICIES: tuple[str, ...] = ("full", "low", "crops", "oracle")


@dataclass
class RuntimeConfig:
    """How the engine runs the protocol."""

    low_res_scale: float = 0.5
    min_crop_side: int = DEFAULT_MIN_CROP_SIDE
    max_new_tokens: int = 32
    strict_parse: bool = False
    # A call that cannot be parsed either fetches the whole image ("all") or is the final answer ("answer").
    on_malformed: Literal["all", "answer"] = "all"
    system_prompt: str = SYSTEM_PROMPT
    batch_size: int = 8
    max_question_tokens: int = 1024  # a longer question is refused (InputError), never truncated
    # Generation keyword arguments for both turns, e.g. {"do_sample": True, "temperature": 1.0} for
    # RL rollouts; empty means greedy decoding.
    sampling: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    """One question on one image; ``oracle_crops`` is used by the ``oracle`` policy only."""

    image: Image.Image | str
    question: str
    oracle_crops: tuple[str, ...] = ()


@dataclass
class VisualTokens:
    """Visual tokens of the global view (low-res or full), of the crops, and of the full image."""

    view: int = 0
    crops: int = 0
    full: int = 0


@dataclass
class Result:
    """What one request produced: the answer, raw turns, crops, parse status, tokens, RTR and timings.

    ``seconds`` holds the wall time of each model call that served this request (one per turn run;
    the oracle prefills its given crops in a single call), measured over the whole batch.
    ``messages`` is the final conversation as the model saw it (view, question, call, crop images,
    answer) and ``token_ids`` the ids generated in each turn: what training and curation reuse
    instead of rebuilding views and crops. Neither goes into ``to_dict``.
    """

    policy: str
    answer: str
    turns: list[str]
    crops: tuple[str, ...] = ()
    parse_status: Literal["answer", "call", "malformed"] = "answer"
    parse_error: str | None = None
    tokens: VisualTokens = field(default_factory=VisualTokens)
    rtr: float = 0.0
    seconds: list[float] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)
    crop_pixels: int = 0  # pixels of the crops shown in turn 2
    messages: list[Message] = field(default_factory=list, repr=False)
    token_ids: list[list[int]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("messages", "token_ids")}
        return {**row, "tokens": asdict(self.tokens), "crops": list(self.crops), "image_size": list(self.image_size)}


class Engine:
    """Runs a policy on requests with a backend (``HFBackend`` or anything with the same two calls)."""

    def __init__(self, backend: Any, config: RuntimeConfig | None = None):
        self.backend = backend
        self.config = config or RuntimeConfig()
        self.grid = VisionGrid.from_processor(backend.processor)
        tokenizer = backend.processor.tokenizer
        # Control tokens (<|im_end|>, <|image_pad|>, ...): in user text the tokenizer would parse them
        # as control tokens, so a question could open a chat turn or break the image-token count.
        self.reserved = sorted(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
        # Tokenized once per distinct question: checks, curation's two passes and the server's usage share it.
        self.question_tokens = functools.lru_cache(maxsize=4096)(lambda q: len(tokenizer(q).input_ids))

    def describe(self) -> dict[str, Any]:
        """What determines this engine's answers: the backend's model (``describe()`` when it has
        one) and every runtime setting but the batch size. Evaluation files record it."""
        describe = getattr(self.backend, "describe", None)
        settings = {k: v for k, v in asdict(self.config).items() if k != "batch_size"}
        return {"model": describe() if describe else type(self.backend).__name__, "runtime": settings}

    def answer(
        self, image: Image.Image | str, question: str, policy: Policy = "crops", oracle_crops: Sequence[str] = ()
    ) -> Result:
        """Answer one question about one image."""
        return self.answer_batch([Request(image, question, tuple(oracle_crops))], policy)[0]

    def answer_batch(
        self,
        requests: Sequence[Request],
        policy: Policy = "crops",
        progress: bool = False,
        on_text: AnswerStream | None = None,
    ) -> list[Result]:
        """Answer many requests, ``config.batch_size`` at a time. ``on_text(index, text)`` gets a
        request's answer text so far as it is decoded (where the backend streams), never a tool call."""
        if policy not in POLICIES:
            raise InputError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        size = self.config.batch_size
        results: list[Result] = []
        for start in tqdm(range(0, len(requests), size), desc=policy, disable=not progress, unit="batch"):
            shifted = (lambda i, text, start=start: on_text(start + i, text)) if on_text else None
            results.extend(self._run_batch(list(requests[start : start + size]), policy, shifted))
        return results

    def check_question(self, question: str) -> None:
        """Refuse an empty or over-long question, or one holding a control token of the tokenizer."""
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty")
        limit = self.config.max_question_tokens
        # Characters first: a token holds a few, so a 50 MB question is refused before it is tokenized.
        if len(question) > 32 * limit or self.question_tokens(question) > limit:
            raise InputError(f"the question is longer than {limit} tokens (max_question_tokens)")
        found = [t for t in self.reserved if t in question]
        if found:
            raise InputError(f"the question contains the reserved token(s) {', '.join(found)}")

    def _run_batch(self, requests: list[Request], policy: Policy, on_text: AnswerStream | None) -> list[Result]:
        for r in requests:
            self.check_question(r.question)
        images = [load_image(r.image) for r in requests]
        if policy == "full":
            return self._single_pass(policy, images, images, requests, None, on_text)
        lows = [low_res_view(im, self.config.low_res_scale, max_pixels=self.grid.max_pixels) for im in images]
        if policy == "low":
            return self._single_pass(policy, images, lows, requests, None, on_text)
        if policy == "oracle":
            return self._oracle(images, lows, requests, on_text)
        return self._protocol(images, lows, requests, on_text)

    def _stream(self, on_text: AnswerStream | None, indexes: list[int], hold_calls: bool = False) -> Stream | None:
        """A backend stream passing row ``r``'s text so far to ``on_text(indexes[r], text)``; with
        ``hold_calls``, not while the text may still become a tool call."""
        if on_text is None:
            return None
        decode = self.backend.processor.tokenizer.decode

        def stream(row: int, ids: list[int]) -> None:
            text = decode(ids, skip_special_tokens=True)
            if not (hold_calls and may_become_call(text)):
                on_text(indexes[row], text)

        return stream

    def _finish(
        self,
        policy: str,
        image: Image.Image,
        view: Image.Image,
        crop_images: list[Image.Image],
        messages: list[Message],
        **result_fields: Any,
    ) -> Result:
        """A result with its exact token counts and RTR; ``messages`` get the final turn appended."""
        grid = self.grid
        crop_tokens = sum(grid.tokens(*c.size) for c in crop_images)
        tokens = VisualTokens(grid.tokens(*view.size), crop_tokens, grid.tokens(*image.size))
        return Result(
            policy=policy,
            tokens=tokens,
            rtr=(tokens.view + tokens.crops) / tokens.full,
            image_size=image.size,
            crop_pixels=sum(c.width * c.height for c in crop_images),
            messages=_with_reply(messages, result_fields["turns"][-1]),
            **result_fields,
        )

    def _timed(self, call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        start = time.perf_counter()
        out = call(*args, max_new_tokens=self.config.max_new_tokens, **self.config.sampling, **kwargs)
        return out, time.perf_counter() - start

    def _single_pass(
        self,
        policy: str,
        images: list[Image.Image],
        views: list[Image.Image],
        requests: list[Request],
        system_prompt: str | None,
        on_text: AnswerStream | None,
    ) -> list[Result]:
        conversations = [turn1_messages(v, r.question, system_prompt) for v, r in zip(views, requests)]
        stream = self._stream(on_text, list(range(len(requests))))
        turn, seconds = self._timed(self.backend.generate, conversations, stream=stream)
        return [
            self._finish(policy, im, v, [], c, answer=text.strip(), turns=[text], seconds=[seconds], token_ids=[ids])
            for im, v, c, text, ids in zip(images, views, conversations, turn.texts, turn.ids)
        ]

    def _oracle(
        self,
        images: list[Image.Image],
        lows: list[Image.Image],
        requests: list[Request],
        on_text: AnswerStream | None,
    ) -> list[Result]:
        """The given crops are shown after a canonical call, as if the model had asked for them."""
        results: list[Result | None] = [None] * len(requests)
        with_crops = [i for i, r in enumerate(requests) if r.oracle_crops]
        without = [i for i, r in enumerate(requests) if not r.oracle_crops]
        if without:
            sub = self._single_pass(
                "oracle",
                [images[i] for i in without],
                [lows[i] for i in without],
                [requests[i] for i in without],
                self.config.system_prompt,
                (lambda row, text: on_text(without[row], text)) if on_text else None,
            )
            for i, res in zip(without, sub):
                results[i] = res
        if with_crops:
            crops = [extract_crops(images[i], requests[i].oracle_crops, self.config.min_crop_side) for i in with_crops]
            conversations = [
                turn2_messages(
                    turn1_messages(lows[i], requests[i].question, self.config.system_prompt),
                    format_call(requests[i].oracle_crops),
                    c,
                )
                for i, c in zip(with_crops, crops)
            ]
            turn, seconds = self._timed(self.backend.generate, conversations, stream=self._stream(on_text, with_crops))
            for i, c, conversation, text, ids in zip(with_crops, crops, conversations, turn.texts, turn.ids):
                call = format_call(requests[i].oracle_crops)
                results[i] = self._finish(
                    "oracle",
                    images[i],
                    lows[i],
                    c,
                    conversation,
                    answer=text.strip(),
                    turns=[call, text],
                    crops=requests[i].oracle_crops,
                    parse_status="call",
                    seconds=[seconds],
                    token_ids=[ids],
                )
        return [r for r in results if r is not None]

    def _protocol(
        self,
        images: list[Image.Image],
        lows: list[Image.Image],
        requests: list[Request],
        on_text: AnswerStream | None,
    ) -> list[Result]:
        """Turn 1 on the low-res view; requests that call the tool get their crops in turn 2."""
        conversations = [turn1_messages(low, r.question, self.config.system_prompt) for low, r in zip(lows, requests)]
        stream = self._stream(on_text, list(range(len(requests))), hold_calls=True)
        turn1, seconds1 = self._timed(self.backend.generate, conversations, stream=stream)
        results: list[Result] = []
        calls: dict[int, tuple[tuple[str, ...], list[Image.Image]]] = {}
        for i, text in enumerate(turn1.texts):
            parsed = parse_response(text, strict=self.config.strict_parse)
            status, error, crop_ids = "answer", None, ()
            if isinstance(parsed, CropCall):
                status, crop_ids = "call", parsed.crop_ids
            elif isinstance(parsed, ParseError):
                status, error = "malformed", parsed.message
                crop_ids = (ALL,) if self.config.on_malformed == "all" else ()
            crops = extract_crops(images[i], crop_ids, self.config.min_crop_side) if crop_ids else []
            if crop_ids:
                calls[i] = (crop_ids, crops)
            answer = parsed.text if isinstance(parsed, Answer) else text.strip()
            results.append(
                self._finish(
                    "crops",
                    images[i],
                    lows[i],
                    crops,
                    conversations[i],
                    answer=answer,
                    turns=[text],
                    crops=crop_ids,
                    parse_status=status,
                    parse_error=error,
                    seconds=[seconds1],
                    token_ids=[turn1.ids[i]],
                )
            )
        if calls:
            rows = sorted(calls)
            follow_ups = [turn2_messages(conversations[i], turn1.texts[i], calls[i][1]) for i in rows]
            stream = self._stream(on_text, rows, hold_calls=True)
            turn2, seconds2 = self._timed(self.backend.extend, turn1.session, rows, follow_ups, stream=stream)
            for i, follow_up, text, ids in zip(rows, follow_ups, turn2.texts, turn2.ids):
                if isinstance(parse_response(text), CropCall):  # one tool round is run: a second call is no answer
                    results[i].answer = ""
                    results[i].parse_error = "turn 2 asked for crops again; only one tool round is run"
                else:
                    results[i].answer = text.strip()
                results[i].turns.append(text)
                results[i].seconds.append(seconds2)
                results[i].messages = _with_reply(follow_up, text)
                results[i].token_ids.append(ids)
        return results


def _with_reply(messages: list[Message], text: str) -> list[Message]:
    return [*messages, {"role": "assistant", "content": [{"type": "text", "text": text}]}]

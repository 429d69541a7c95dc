"""The two-turn AwaRes engine and the single-pass baselines, over any backend with ``generate``/``extend``
(the training-free ``attention`` policy is in ``runtime.attention``)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from PIL import Image
from tqdm.auto import tqdm

from ..crops import (
    ALL,
    CROP_IDS,
    DEFAULT_MIN_CROP_SIDE,
    MIN_VIEW_SIDE,
    VisionGrid,
    crop_box,
    extract_crops,
    low_res_view,
)
from ..errors import InputError
from ..images import load_image
from ..models.backend import GREEDY, Backend, Sampling, Stream, Turn
from ..models.decoding import NO_CALL, CallLimit
from ..protocol import (
    SYSTEM_PROMPT,
    CropCall,
    Message,
    ParseError,
    format_call,
    may_become_call,
    parse_response,
    turn1_messages,
    turn2_messages,
)
from .attention import AttentionConfig, answer_with_attention
from .policies import POLICIES, POLICY_TABLE, Policy

# Called with a request's index in ``answer_batch`` and its answer text so far.
AnswerStream = Callable[[int, str], None]


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
    sampling: Sampling = GREEDY  # both turns' (RL rollouts sample)
    # The ``crops`` policy's visual-token budget for requests that set none of their own (``Request``)
    max_rtr: float | None = None
    max_crops: int | None = None
    # The training-free ``attention`` policy's rule (runtime/attention.py)
    attention: AttentionConfig = field(default_factory=AttentionConfig)


@dataclass
class Request:
    """One question on one image; ``oracle_crops`` is used by the ``oracle`` policy only. A
    visual-token budget bounds the ``crops`` policy's call: at most ``max_rtr`` of the full image's
    tokens (view included) and at most ``max_crops`` crops; crops that would break it are masked
    while the call is decoded, so the model asks for what it can afford or answers from the view."""

    image: Image.Image | str
    question: str
    oracle_crops: tuple[str, ...] = ()
    max_rtr: float | None = None
    max_crops: int | None = None


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
    # ``attention`` policy: the low-res answer's confidence, the attention grid over the view
    # (rows of weights), and the box on the full image that the crops cover
    attention: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None  # the request's max_rtr and max_crops, where it set them

    def to_dict(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("messages", "token_ids")}
        return {**row, "tokens": asdict(self.tokens), "crops": list(self.crops), "image_size": list(self.image_size)}


@dataclass
class _Batch:
    """One engine call's requests, their images and views, and how to decode them."""

    requests: list[Request]
    images: list[Image.Image]
    views: list[Image.Image]  # the low-res views (the full images for ``full``)
    generation: dict[str, Any]  # max_new_tokens and sampling of every turn
    on_text: AnswerStream | None

    def select(self, rows: list[int]) -> _Batch:
        """The sub-batch of ``rows``; its texts go to the same stream under the original indexes."""
        on_text = self.on_text
        return _Batch(
            [self.requests[i] for i in rows],
            [self.images[i] for i in rows],
            [self.views[i] for i in rows],
            self.generation,
            (lambda row, text: on_text(rows[row], text)) if on_text else None,
        )


class Engine:
    """Runs a policy on requests with a backend: ``HFBackend`` in process, or ``OpenAIBackend`` on a
    VLM server. The engine holds no per-call state: batch size, token limit and sampling are
    arguments of ``answer_batch`` (defaults from ``config``), so one engine can serve any caller."""

    def __init__(self, backend: Backend, config: RuntimeConfig | None = None):
        self.backend = backend
        self.config = config or RuntimeConfig()
        self.grid = VisionGrid.from_processor(backend.processor)
        tokenizer = backend.processor.tokenizer
        # Control tokens (<|im_end|>, <|image_pad|>, ...): in user text the tokenizer would parse them
        # as control tokens, so a question could open a chat turn or break the image-token count.
        self.reserved = sorted(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
        # Tokenized once per distinct question: checks, curation's two passes and the server's usage share it.
        self.question_tokens = functools.lru_cache(maxsize=4096)(lambda q: len(tokenizer(q).input_ids))
        self._runners: dict[str, Callable[[_Batch], list[Result]]] = {
            "full": self._full,
            "low": self._low,
            "oracle": self._oracle,
            "crops": self._protocol,
            "attention": lambda batch: answer_with_attention(self, batch),
        }

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
        *,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        progress: bool = False,
        on_text: AnswerStream | None = None,
    ) -> list[Result]:
        """Answer many requests, ``batch_size`` at a time, each turn decoding at most
        ``max_new_tokens`` with ``sampling`` (defaults: ``config``'s). ``on_text(index, text)`` gets a
        request's answer text so far as it is decoded (where the backend streams), never a tool call."""
        if policy not in self._runners:
            raise InputError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")
        size = batch_size or self.config.batch_size
        generation = {
            "max_new_tokens": max_new_tokens or self.config.max_new_tokens,
            "sampling": self.config.sampling if sampling is None else sampling,
        }
        results: list[Result] = []
        for start in tqdm(range(0, len(requests), size), desc=policy, disable=not progress, unit="batch"):
            shifted = (lambda i, text, start=start: on_text(start + i, text)) if on_text else None
            batch = self._prepare(list(requests[start : start + size]), policy, generation, shifted)
            results.extend(self._runners[policy](batch))
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

    def _prepare(
        self, requests: list[Request], policy: str, generation: dict[str, Any], on_text: AnswerStream | None
    ) -> _Batch:
        """Checked questions and loaded images; the low-res views unless the policy is ``full``."""
        for r in requests:
            self.check_question(r.question)
        images = [load_image(r.image) for r in requests]
        scale, grid = self.config.low_res_scale, self.grid
        full = POLICY_TABLE[policy].view == "full"
        views = (
            images
            if full
            else [
                low_res_view(im, scale, max(MIN_VIEW_SIDE, grid.cell), grid.max_pixels, grid.min_pixels)
                for im in images
            ]
        )
        return _Batch(requests, images, views, generation, on_text)

    def _stream(self, batch: _Batch, hold_calls: bool = False, rows: list[int] | None = None) -> Stream | None:
        """A backend stream passing row ``r``'s text so far to ``batch.on_text(rows[r], text)``; with
        ``hold_calls``, not while the text may still become a tool call."""
        on_text = batch.on_text
        if on_text is None:
            return None
        decode, rows = self.backend.processor.tokenizer.decode, rows or list(range(len(batch.requests)))

        def stream(row: int, ids: list[int]) -> None:
            text = decode(ids, skip_special_tokens=True)
            if not (hold_calls and may_become_call(text)):
                on_text(rows[row], text)

        return stream

    def _timed(self, call: Callable[..., Turn], batch: _Batch, *args: Any, **kwargs: Any) -> tuple[Turn, float]:
        start = time.perf_counter()
        out = call(*args, **batch.generation, **kwargs)
        return out, time.perf_counter() - start

    def _result(
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

    def _full(self, batch: _Batch) -> list[Result]:
        return self._single_pass("full", batch, system_prompt=None)

    def _low(self, batch: _Batch) -> list[Result]:
        return self._single_pass("low", batch, system_prompt=None)

    def _single_pass(self, policy: str, batch: _Batch, system_prompt: str | None) -> list[Result]:
        """One pass that answers: a call is masked while decoding (``NO_CALL``), never returned."""
        conversations = [turn1_messages(v, r.question, system_prompt) for v, r in zip(batch.views, batch.requests)]
        limits = [NO_CALL] * len(conversations)
        turn, seconds = self._timed(
            self.backend.generate, batch, conversations, stream=self._stream(batch), limits=limits
        )
        return [
            self._result(policy, im, v, [], c, answer=text.strip(), turns=[text], seconds=[seconds], token_ids=[ids])
            for im, v, c, text, ids in zip(batch.images, batch.views, conversations, turn.texts, turn.ids)
        ]

    def _oracle(self, batch: _Batch) -> list[Result]:
        """The given crops are shown after a canonical call, as if the model had asked for them;
        requests without crops are answered from the low-res view in one pass."""
        results: dict[int, Result] = {}
        with_crops = [i for i, r in enumerate(batch.requests) if r.oracle_crops]
        without = [i for i, r in enumerate(batch.requests) if not r.oracle_crops]
        if without:
            results |= dict(zip(without, self._single_pass("oracle", batch.select(without), self.config.system_prompt)))
        if with_crops:
            sub = batch.select(with_crops)
            calls = [format_call(r.oracle_crops) for r in sub.requests]
            crops = [
                extract_crops(im, r.oracle_crops, self.config.min_crop_side) for im, r in zip(sub.images, sub.requests)
            ]
            conversations = [
                turn2_messages(turn1_messages(low, r.question, self.config.system_prompt), call, c)
                for low, r, call, c in zip(sub.views, sub.requests, calls, crops)
            ]
            turn, seconds = self._timed(self.backend.generate, sub, conversations, stream=self._stream(sub))
            for i, r, image, low, call, c, conversation, text, ids in zip(
                with_crops, sub.requests, sub.images, sub.views, calls, crops, conversations, turn.texts, turn.ids
            ):
                results[i] = self._result(
                    "oracle", image, low, c, conversation, answer=text.strip(), turns=[call, text],
                    crops=r.oracle_crops, parse_status="call", seconds=[seconds], token_ids=[ids],
                )  # fmt: skip
        return [results[i] for i in range(len(batch.requests))]

    def _protocol(self, batch: _Batch) -> list[Result]:
        """Turn 1 on the low-res view; requests that call the tool get their crops in turn 2."""
        prompt = self.config.system_prompt
        conversations = [turn1_messages(low, r.question, prompt) for low, r in zip(batch.views, batch.requests)]
        limits = [self.call_limit(r, im, v) for r, im, v in zip(batch.requests, batch.images, batch.views)]
        turn1, seconds1 = self._timed(
            self.backend.generate, batch, conversations, stream=self._stream(batch, hold_calls=True), limits=limits
        )
        parsed = [self._within(self._parse_call(text), limit) for text, limit in zip(turn1.texts, limits)]
        crops = {
            i: extract_crops(batch.images[i], crop_ids, self.config.min_crop_side)
            for i, (_, _, crop_ids, _) in enumerate(parsed)
            if crop_ids
        }
        turn2: dict[int, tuple[str, list[int], list[Message]]] = {}
        seconds2 = 0.0
        if crops:
            rows = sorted(crops)
            follow_ups = [turn2_messages(conversations[i], turn1.texts[i], crops[i]) for i in rows]
            stream = self._stream(batch, hold_calls=True, rows=rows)
            second, seconds2 = self._timed(self.backend.extend, batch, turn1.session, rows, follow_ups, stream=stream)
            turn2 = {i: (text, ids, f) for i, text, ids, f in zip(rows, second.texts, second.ids, follow_ups)}
        results = []
        for i, (status, error, crop_ids, answer) in enumerate(parsed):
            turns, seconds, ids, messages = [turn1.texts[i]], [seconds1], [turn1.ids[i]], conversations[i]
            if i in turn2:
                text, ids2, messages = turn2[i]
                turns, seconds, ids = [*turns, text], [seconds1, seconds2], [*ids, ids2]
                answer = text.strip()
                if isinstance(parse_response(text), CropCall):  # one tool round is run: a second call is no answer
                    answer, error = "", "turn 2 asked for crops again; only one tool round is run"
            results.append(
                self._result(
                    "crops",
                    batch.images[i],
                    batch.views[i],
                    crops.get(i, []),
                    messages,
                    answer=answer,
                    turns=turns,
                    crops=crop_ids,
                    parse_status=status,
                    parse_error=error,
                    seconds=seconds,
                    token_ids=ids,
                    budget=_budget(batch.requests[i], self.config),
                )  # fmt: skip
            )
        return results

    def call_limit(self, request: Request, image: Image.Image, view: Image.Image) -> CallLimit:
        """What ``request``'s call may fetch on ``image`` after ``view``: its budget in tokens and
        crops, each crop's cost on this image. ``InputError`` for a budget under the view's own share."""
        grid = self.grid
        max_rtr, max_crops = _budget_of(request, self.config)
        if max_rtr is None and max_crops is None:
            return CallLimit()
        full, seen = grid.tokens(*image.size), grid.tokens(*view.size)
        tokens = None
        if max_rtr is not None:
            tokens = int(max_rtr * full + 1e-9) - seen
            if tokens < 0:
                raise InputError(
                    f"max_rtr {max_rtr:g} is below the low-res view's own share of this image's visual "
                    f"tokens ({seen / full:.3f}); ask for at least that"
                )
        return CallLimit(self.crop_costs(image), tokens, max_crops)

    def crop_costs(self, image: Image.Image) -> dict[str, int]:
        """The visual tokens each crop id (``all`` included) adds on ``image``."""
        boxes = {c: crop_box(c, *image.size, min_side=self.config.min_crop_side) for c in CROP_IDS}
        return {c: self.grid.tokens(box.width, box.height) for c, box in boxes.items()}

    @staticmethod
    def _within(
        parsed: tuple[str, str | None, tuple[str, ...], str], limit: CallLimit
    ) -> tuple[str, str | None, tuple[str, ...], str]:
        """A parsed call cut to the crops its budget allows (where decoding could not mask them:
        sampled turns, a server backend); a call none of whose crops fit fetches nothing."""
        status, error, crop_ids, answer = parsed
        kept: list[str] = []
        for crop in crop_ids:
            if crop not in limit.allowed(kept):
                break
            kept.append(crop)
        if len(kept) == len(crop_ids):
            return parsed
        if not kept:
            return "malformed", "the call's crops exceed the request's budget", (), ""
        return status, error, tuple(kept), answer

    def _parse_call(self, text: str) -> tuple[str, str | None, tuple[str, ...], str]:
        """Turn 1 read as the protocol reads it: status, parse error, crops to fetch, and the answer
        if it is one."""
        parsed = parse_response(text, strict=self.config.strict_parse)
        if isinstance(parsed, CropCall):
            return "call", None, parsed.crop_ids, text.strip()
        if isinstance(parsed, ParseError):
            crop_ids = (ALL,) if self.config.on_malformed == "all" else ()
            return "malformed", parsed.message, crop_ids, text.strip()
        return "answer", None, (), parsed.text


def _budget_of(request: Request, config: RuntimeConfig) -> tuple[float | None, int | None]:
    """The request's budget, else the engine's default."""
    max_rtr = request.max_rtr if request.max_rtr is not None else config.max_rtr
    return max_rtr, request.max_crops if request.max_crops is not None else config.max_crops


def _budget(request: Request, config: RuntimeConfig) -> dict[str, Any] | None:
    max_rtr, max_crops = _budget_of(request, config)
    return None if max_rtr is None and max_crops is None else {"max_rtr": max_rtr, "max_crops": max_crops}


def _with_reply(messages: list[Message], text: str) -> list[Message]:
    return [*messages, {"role": "assistant", "content": [{"type": "text", "text": text}]}]

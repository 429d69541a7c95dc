"""The one interface the engine runs on: ``Backend`` (in-process transformers, or a VLM server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..protocol import Message

# Below this a temperature samples as greedy decoding would (vLLM's rule): 1e-40 is greedy, not a NaN.
SAMPLING_EPSILON = 1e-5


@dataclass(frozen=True)
class Sampling:
    """How a turn picks its tokens, the same for every backend: greedy (``temperature`` 0, the
    default, as the protocol is evaluated) or drawn at ``temperature`` from the ``top_p`` nucleus and
    the ``top_k`` likeliest tokens (0: all); ``seed`` makes a draw repeatable."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < SAMPLING_EPSILON:
            object.__setattr__(self, "temperature", 0.0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def generate_kwargs(self) -> dict[str, Any]:
        """transformers' ``generate`` options for this sampling."""
        if self.greedy:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


GREEDY = Sampling()

# Called with a row of the batch and the ids that row has generated so far, as decoding goes on.
Stream = Callable[[int, list[int]], None]


@dataclass
class Turn:
    """Decoded texts of one generation call, plus what a later call needs to continue from it."""

    texts: list[str]
    ids: list[list[int]]  # generated ids per row, through its end of turn
    session: Any  # the backend's own state: an HF KV cache, or the conversations a server was sent
    logits: tuple[Any, ...] | None = None  # per decoding step, when asked with output_logits=True (HF)
    confidence: list[float] | None = None  # per row, the probability of its first generated token (HF, greedy)
    attention: list[Any] | None = None  # per row, the last prompt token's attention over its visual tokens (HF)


@runtime_checkable
class Backend(Protocol):
    """What ``Engine`` needs of a model: its processor (token accounting, question checks), turn 1
    on a batch of conversations, turn 2 on some of its rows, and a description for result files.
    ``stream``, where a backend can, receives each answering row's ids as they are decoded;
    ``limits`` (``models.decoding.CallLimit`` per row), where a backend can, bound the tool call
    while it is decoded; ``sampling`` is how both turns pick their tokens."""

    processor: Any

    def generate(
        self,
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        limits: list[Any] | None = None,
        sampling: Sampling = GREEDY,
    ) -> Turn: ...

    def extend(
        self,
        session: Any,
        rows: list[int],
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        limits: list[Any] | None = None,
        sampling: Sampling = GREEDY,
    ) -> Turn: ...

    def describe(self) -> dict[str, Any]: ...

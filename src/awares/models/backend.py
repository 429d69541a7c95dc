"""The one interface the engine runs on: ``Backend`` (in-process transformers, or a VLM server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..protocol import Message

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
    while it is decoded."""

    processor: Any

    def generate(
        self,
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        limits: list[Any] | None = None,
        **sampling: Any,
    ) -> Turn: ...

    def extend(
        self,
        session: Any,
        rows: list[int],
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        limits: list[Any] | None = None,
        **sampling: Any,
    ) -> Turn: ...

    def describe(self) -> dict[str, Any]: ...

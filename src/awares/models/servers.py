"""The OpenAI-compatible engines ``OpenAIBackend`` talks to, and what each one takes.

One entry per engine: how to recognise it (a ``GET`` only it answers that way) and the request field
that constrains a turn to a call or an answer (``CALL_OR_ANSWER_REGEX``). An engine that would
ignore a constraint has none here, and asking it for guided calls is an error, never a silent no-op:
llama.cpp ignores vLLM's ``structured_outputs`` and enforces only its own GBNF ``grammar``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..protocol import CALL_OR_ANSWER_REGEX

# CALL_OR_ANSWER_REGEX in llama.cpp's GBNF: a canonical call, or any text that does not start like one.
CALL_OR_ANSWER_GBNF = r"""root ::= call | answer
call ::= "GET_CROPS: [" ("'all'" | crop (", " crop)*) "]"
crop ::= "'" [0-8] "'"
answer ::= (([^G] | "G" [^E] | "GE" [^T]) rest | "G" | "GE")?
rest ::= [^\x00]*
"""


@dataclass(frozen=True)
class ServerEngine:
    """An OpenAI-compatible engine: ``probe(get)`` says whether a server is one (``get(path)`` is its
    JSON reply to ``GET path`` from the server's root, or None); ``guided`` is the request's extra
    body that constrains a turn to a call or an answer, None where the engine cannot."""

    name: str
    probe: Callable[[Callable[[str], Any]], bool]
    guided: dict[str, Any] | None


def _is_awares(get: Callable[[str], Any]) -> bool:
    models = get("/v1/models")
    return isinstance(models, dict) and any(m.get("owned_by") == "awares" for m in models.get("data") or [])


def _has(path: str, key: str) -> Callable[[Callable[[str], Any]], bool]:
    return lambda get: isinstance(reply := get(path), dict) and key in reply


# In the order they are probed: a llama.cpp or SGLang server may answer vLLM's /version too.
ENGINES: tuple[ServerEngine, ...] = (
    ServerEngine("awares", _is_awares, None),  # `awares serve --raw`: no constrained decoding
    ServerEngine("llama.cpp", _has("/props", "default_generation_settings"), {"grammar": CALL_OR_ANSWER_GBNF}),
    ServerEngine("sglang", _has("/get_server_info", "model_path"), {"regex": CALL_OR_ANSWER_REGEX}),
    ServerEngine("vllm", _has("/version", "version"), {"structured_outputs": {"regex": CALL_OR_ANSWER_REGEX}}),
)
ENGINE_NAMES = tuple(e.name for e in ENGINES)


def engine_named(name: str) -> ServerEngine:
    """The engine called ``name`` (one of ``ENGINE_NAMES``)."""
    for engine in ENGINES:
        if engine.name == name:
            return engine
    raise InputError(f"unknown server engine {name!r}; choose from {', '.join(ENGINE_NAMES)}")


def detect_engine(base_url: str, timeout: float = 5.0) -> ServerEngine | None:
    """The engine serving ``base_url`` (an OpenAI ``/v1`` URL); None when no probe recognises it."""
    root = base_url.rstrip("/").removesuffix("/v1")

    def get(path: str) -> Any:
        try:
            with urllib.request.urlopen(root + path, timeout=timeout) as reply:
                return json.load(reply)
        except (OSError, ValueError):  # no such route (HTTPError), not JSON, or nothing there: not this one
            return None

    return next((engine for engine in ENGINES if engine.probe(get)), None)


def guided_body(engine: ServerEngine | None, base_url: str) -> dict[str, Any]:
    """The extra request body that makes ``engine`` constrain turns to a call or an answer; an
    error for an engine that cannot (or one not recognised), which would ignore the field."""
    if engine is None:
        raise InputError(
            f"--guided-calls: {base_url} is no engine awares recognises, so it cannot tell which constraint "
            f"the server enforces; name it with --engine ({', '.join(ENGINE_NAMES)})"
        )
    if engine.guided is None:
        raise InputError(
            f"--guided-calls: {engine.name} at {base_url} cannot constrain decoding; guided calls need "
            f"{', '.join(e.name for e in ENGINES if e.guided)}"
        )
    return engine.guided

"""`awares serve`: the AwaRes protocol behind an OpenAI-compatible ``/v1/chat/completions``.

Requests that arrive together run as one engine batch (``Batcher``) on one worker; a full queue
answers 503 with ``Retry-After``. Each completion carries the usual ``usage`` (with the visual tokens
actually used) and an ``awares`` object: crops, RTR, tokens of view, crops and full image, time per
turn. ``GET /v1/models``, ``/health`` and ``/metrics`` (Prometheus) complete the API.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ..crops import CROP_NAMES, crop_box
from ..errors import AwaresError
from ..runtime import POLICIES, Engine, Result
from ..runtime import Request as EngineRequest
from .batcher import Batcher, QueueFull
from .requests import BadRequest, Limits, parse_chat, parse_conversation

DEMO_PAGE = Path(__file__).with_name("demo.html")


@dataclass
class ServeConfig:
    """The server's knobs: model name, batching, queue, request limits."""

    model_name: str = "awares"
    max_batch: int = 8
    max_wait_ms: float = 10.0
    queue_size: int = 64
    max_request_bytes: int = 32 << 20
    max_tokens: int = 256  # the most a request may ask for (its max_tokens)
    limits: Limits = field(default_factory=Limits)


class Metrics:
    """Prometheus metrics of one server: requests by status, visual tokens used vs full, RTR, latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("awares_requests", "Chat requests by HTTP status", ["status"], registry=self.registry)
        self.tokens = Counter(
            "awares_visual_tokens",
            "Visual tokens: used (view + crops) and full image",
            ["kind"],
            registry=self.registry,
        )
        self.rtr = Histogram(
            "awares_rtr", "Retained visual-token ratio per request", registry=self.registry,
            buckets=(0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5),
        )  # fmt: skip
        self.latency = Histogram("awares_request_seconds", "Time from request to answer", registry=self.registry)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def raw_completion(text: str, model: str, generated: int) -> dict[str, Any]:
    """A plain ``chat.completion`` (``awares serve --raw``)."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"completion_tokens": generated},
    }


def completion(result: Result, model: str, question_tokens: int, min_crop_side: int = 100) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for ``result``: ``usage`` counts the visual tokens used."""
    visual = result.tokens.view + result.tokens.crops
    generated = sum(len(ids) for ids in result.token_ids)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": visual + question_tokens,
            "completion_tokens": generated,
            "total_tokens": visual + question_tokens + generated,
            "prompt_tokens_details": {"visual_tokens": visual, "visual_tokens_full_image": result.tokens.full},
        },
        "awares": {
            "policy": result.policy,
            "crops": list(result.crops),
            "image_size": list(result.image_size),
            # every crop's box on the full image (what the demo page draws over the low-res view)
            "crop_boxes": {c: list(crop_box(c, *result.image_size, min_crop_side).as_tuple()) for c in CROP_NAMES},
            "rtr": result.rtr,
            "tokens": {"view": result.tokens.view, "crops": result.tokens.crops, "full": result.tokens.full},
            "seconds": result.seconds,
            "turns": result.turns,
        },
    }


def create_app(engine: Engine, config: ServeConfig | None = None, raw: bool = False) -> FastAPI:
    """The server app around ``engine`` (its model runs on the batcher's one worker thread). With
    ``raw``, a plain VLM endpoint instead: whole conversations (any turns, several images) answered
    in one pass by the engine's backend, without the protocol, as vLLM serves a checkpoint."""
    config = config or ServeConfig()
    engine.config.batch_size = config.max_batch
    metrics = Metrics()

    def run(key: tuple[str, int], jobs: list[Any]) -> list[tuple[Any, int]]:
        """On the worker thread, the only one that touches the model and its tokenizer."""
        policy, max_tokens = key
        if raw:
            turn = engine.backend.generate(jobs, max_new_tokens=max_tokens)
            return [(text, len(ids)) for text, ids in zip(turn.texts, turn.ids)]
        engine.config.max_new_tokens = max_tokens
        results = engine.answer_batch(jobs, policy)
        return [(result, engine.question_tokens(r.question)) for result, r in zip(results, jobs)]

    batcher = Batcher(run, config.max_batch, config.max_wait_ms, config.queue_size)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="awares", description=__doc__, lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        began = time.perf_counter()
        response = await _answer(request)
        metrics.requests.labels(str(response.status_code)).inc()
        metrics.latency.observe(time.perf_counter() - began)
        return response

    def prepare(payload: Any) -> tuple[Any, tuple[str, int]]:
        """The job and batch key of a request (raises ``BadRequest``)."""
        if raw:
            return parse_conversation(payload, config.limits), ("raw", _key(payload, config)[1])
        image, question = parse_chat(payload, config.limits)
        return EngineRequest(image, question), _key(payload, config)

    async def _answer(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > config.max_request_bytes:  # refused before it is read
            return _error(413, f"the request is {int(declared):,} bytes; the limit is {config.max_request_bytes:,}")
        body = await request.body()
        if len(body) > config.max_request_bytes:
            return _error(413, f"the request is {len(body):,} bytes; the limit is {config.max_request_bytes:,}")
        try:
            job, key = await asyncio.to_thread(prepare, json.loads(body))
        except json.JSONDecodeError as err:
            return _error(400, f"the body is not JSON: {err}")
        except BadRequest as err:
            return _error(err.status, err.message)
        try:
            future = batcher.submit(job, key)
        except QueueFull as err:
            return _error(503, f"the server is busy ({err}); retry shortly", {"Retry-After": "1"})
        try:
            result, tokens = await asyncio.wrap_future(future)
        except AwaresError as err:  # the engine refused the question (too long, control tokens)
            return _error(400, str(err))
        if raw:
            return JSONResponse(raw_completion(result, config.model_name, tokens))
        metrics.tokens.labels("used").inc(result.tokens.view + result.tokens.crops)
        metrics.tokens.labels("full").inc(result.tokens.full)
        metrics.rtr.observe(result.rtr)
        return JSONResponse(completion(result, config.model_name, tokens, engine.config.min_crop_side))

    @app.get("/", response_class=HTMLResponse)
    def demo() -> str:
        return DEMO_PAGE.read_text()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "owned_by": "awares"}]}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "queued": batcher.queue.qsize(), "worker_alive": batcher.worker.is_alive()}

    @app.get("/metrics")
    def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry).decode(), media_type="text/plain; version=0.0.4")

    return app


def _key(payload: dict[str, Any], config: ServeConfig) -> tuple[str, int]:
    """The batch key of a request: its policy (``policy`` field, default ``crops``) and max_tokens."""
    policy = payload.get("policy", "crops")
    if policy not in POLICIES or policy == "oracle":
        raise BadRequest(400, f"unknown policy {policy!r}; choose crops, full or low")
    max_tokens = next((payload[k] for k in ("max_tokens", "max_completion_tokens") if payload.get(k) is not None), 32)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= config.max_tokens:
        raise BadRequest(400, f"max_tokens must be an integer in 1..{config.max_tokens}")
    return policy, max_tokens


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1") -> tuple[Any, str]:
    """Serve ``app`` with uvicorn on a free port of ``host`` in a daemon thread (tests, benchmarks);
    returns the server (set ``should_exit`` to stop it) and its base URL, once it accepts requests."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error"))
    threading.Thread(target=server.run, name="awares-serve", daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://{host}:{port}"

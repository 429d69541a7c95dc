"""`awares serve`: the AwaRes protocol behind an OpenAI-compatible ``/v1/chat/completions``.

Requests that arrive together run as one engine batch (``Batcher``) on one worker; a full queue
answers 503 with ``Retry-After``. Each completion carries the usual ``usage`` (with the visual tokens
actually used) and an ``awares`` object: crops, RTR, tokens of view, crops and full image, time per
turn. With ``stream: true`` the answer comes as server-sent ``chat.completion.chunk`` events while it
is decoded (turn 1 and the crop fetch stay on the server), the ``awares`` object on the last chunk.
``GET /v1/models``, ``/health`` and ``/metrics`` (Prometheus) complete the API.
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
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ..crops import CROP_NAMES, crop_box
from ..errors import AwaresError
from ..runtime import SERVED_POLICIES, Engine, Result
from ..runtime import Request as EngineRequest
from .batcher import Batcher, QueueFull
from .requests import BadRequest, Limits, Options, parse_chat, parse_conversation, parse_options

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


def chunk(completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    """One server-sent event of a streamed completion (``chat.completion.chunk``)."""
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    return f"data: {json.dumps({**body, 'choices': [choice], **extra})}\n\n"


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
            # the attention policy's look: its confidence, the attention grid over the view, the box
            **({"attention": result.attention} if result.attention else {}),
        },
    }


def create_app(engine: Engine, config: ServeConfig | None = None, raw: bool = False) -> FastAPI:
    """The server app around ``engine`` (its model runs on the batcher's one worker thread). With
    ``raw``, a plain VLM endpoint instead: whole conversations (any turns, several images) answered
    in one pass by the engine's backend, without the protocol, as vLLM serves a checkpoint."""
    config = config or ServeConfig()
    metrics = Metrics()

    def run(key: tuple[str, int, float, float], jobs: list[tuple[Any, Any]]) -> list[tuple[Any, int]]:
        """On the worker thread, the only one that touches the model and its tokenizer. A job is a
        request and, when it streams, the sink its answer text so far goes to."""
        policy, max_tokens, temperature, top_p = key
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature else {}
        payloads, sinks = [p for p, _ in jobs], [s for _, s in jobs]
        on_text = (lambda i, text: sinks[i] and sinks[i](text)) if any(sinks) else None
        if raw:
            decode = engine.backend.processor.tokenizer.decode
            stream = (lambda row, ids: on_text(row, decode(ids, skip_special_tokens=True))) if on_text else None
            turn = engine.backend.generate(payloads, max_new_tokens=max_tokens, stream=stream, **sampling)
            return [(text, len(ids)) for text, ids in zip(turn.texts, turn.ids)]
        results = engine.answer_batch(
            payloads, policy, batch_size=len(payloads), max_new_tokens=max_tokens, sampling=sampling, on_text=on_text
        )
        return [(result, engine.question_tokens(r.question)) for result, r in zip(results, payloads)]

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

    def prepare(payload: Any) -> tuple[Any, Options]:
        """The job and options of a request (raises ``BadRequest``)."""
        options = parse_options(payload, config.model_name, SERVED_POLICIES, config.max_tokens)
        if raw:
            return parse_conversation(payload, config.limits), options
        image, question = parse_chat(payload, config.limits)
        return EngineRequest(image, question), options

    async def _answer(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > config.max_request_bytes:  # refused before it is read
            return _error(413, f"the request is {int(declared):,} bytes; the limit is {config.max_request_bytes:,}")
        body = await request.body()
        if len(body) > config.max_request_bytes:
            return _error(413, f"the request is {len(body):,} bytes; the limit is {config.max_request_bytes:,}")
        try:
            job, options = await asyncio.to_thread(prepare, json.loads(body))
        except json.JSONDecodeError as err:
            return _error(400, f"the body is not JSON: {err}")
        except BadRequest as err:
            return _error(err.status, err.message)
        texts: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        sink = (lambda text: loop.call_soon_threadsafe(texts.put_nowait, text)) if options.stream else None
        try:
            done = asyncio.wrap_future(batcher.submit((job, sink), options.key))
        except QueueFull as err:
            return _error(503, f"the server is busy ({err}); retry shortly", {"Retry-After": "1"})
        if options.stream:
            first = asyncio.ensure_future(texts.get())
            await asyncio.wait({first, done}, return_when=asyncio.FIRST_COMPLETED)
            if not first.done() and isinstance(done.exception(), AwaresError):  # refused before any text
                first.cancel()
                return _error(400, str(done.exception()))
            return StreamingResponse(_events(first, texts, done, options), media_type="text/event-stream")
        try:
            result, tokens = await done
        except AwaresError as err:  # the engine refused the question (too long, control tokens)
            return _error(400, str(err))
        return JSONResponse(_completion(result, tokens))

    def _completion(result: Any, tokens: int) -> dict[str, Any]:
        if raw:
            return raw_completion(result, config.model_name, tokens)
        metrics.tokens.labels("used").inc(result.tokens.view + result.tokens.crops)
        metrics.tokens.labels("full").inc(result.tokens.full)
        metrics.rtr.observe(result.rtr)
        return completion(result, config.model_name, tokens, engine.config.min_crop_side)

    async def _events(getter: asyncio.Future, texts: asyncio.Queue, done: asyncio.Future, options: Options):
        """The answer as it is decoded: deltas of its text so far (whitespace at its ends held back,
        as the final answer is stripped), then the rest of the final answer, the finish, usage."""
        completion_id, model = f"chatcmpl-{uuid.uuid4().hex}", config.model_name
        yield chunk(completion_id, model, {"role": "assistant", "content": ""})
        sent = ""
        while True:
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            arrived = [getter.result()] if getter.done() else []
            while not texts.empty():
                arrived.append(texts.get_nowait())
            for text in arrived:
                visible = text.rstrip("\ufffd").strip()  # an unfinished UTF-8 character waits for its bytes
                if visible.startswith(sent) and len(visible) > len(sent):
                    yield chunk(completion_id, model, {"content": visible[len(sent) :]})
                    sent = visible
            if done.done():
                break
            if getter.done():
                getter = asyncio.ensure_future(texts.get())
        getter.cancel()
        try:
            result, tokens = done.result()
        except AwaresError as err:
            yield f"data: {json.dumps({'error': {'message': str(err), 'type': 'invalid_request_error'}})}\n\n"
            yield "data: [DONE]\n\n"
            return
        whole = _completion(result, tokens)
        answer = whole["choices"][0]["message"]["content"]
        if answer.startswith(sent) and len(answer) > len(sent):
            yield chunk(completion_id, model, {"content": answer[len(sent) :]})
        extra = {"awares": whole["awares"]} if "awares" in whole else {}
        yield chunk(completion_id, model, {}, "stop", **extra)
        if options.include_usage:
            body = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time())}
            yield f"data: {json.dumps({**body, 'model': model, 'choices': [], 'usage': whole['usage']})}\n\n"
        yield "data: [DONE]\n\n"

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

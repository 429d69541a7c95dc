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
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..crops import ALL, CROP_NAMES, crop_box
from ..errors import AwaresError
from ..models import Sampling
from ..runtime import SERVED_POLICIES, Engine, Result
from ..runtime import Request as EngineRequest
from .batcher import Batcher, QueueFull
from .requests import BadRequest, Limits, batch_key, parse_chat, parse_conversation, parse_request
from .schema import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorResponse,
    PromptTokensDetails,
    Usage,
    completion_id,
)

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
    """Prometheus metrics of one server: requests by status (``disconnect``: a client gone before its
    stream ended), visual tokens used vs full, RTR, latency of whole requests."""

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


def _error(status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse.of(status, message, param).model_dump(), status, headers=headers)


def completion(result: Result, model: str, question_tokens: int, min_crop_side: int = 100) -> ChatCompletion:
    """An OpenAI ``chat.completion`` for ``result``: ``usage`` counts the visual tokens used."""
    visual = result.tokens.view + result.tokens.crops
    generated = sum(len(ids) for ids in result.token_ids)
    usage = Usage(
        prompt_tokens=visual + question_tokens,
        completion_tokens=generated,
        total_tokens=visual + question_tokens + generated,
        prompt_tokens_details=PromptTokensDetails(visual_tokens=visual, visual_tokens_full_image=result.tokens.full),
    )
    return ChatCompletion(
        model=model,
        choices=[Choice(message=AssistantMessage(content=result.answer))],
        usage=usage,
        awares=report(result, min_crop_side),
    )


def report(result: Result, min_crop_side: int) -> dict[str, Any]:
    """The ``awares`` object of a completion: what the protocol ran and spent."""
    return {
        "policy": result.policy,
        "crops": list(result.crops),
        "image_size": list(result.image_size),
        # every crop's box on the full image (what the demo page draws over the low-res view)
        "crop_boxes": {c: list(crop_box(c, *result.image_size, min_crop_side).as_tuple()) for c in CROP_NAMES},
        "crop_names": {**CROP_NAMES, ALL: "whole image"},  # what each crop id names, for people
        "rtr": result.rtr,
        "tokens": {"view": result.tokens.view, "crops": result.tokens.crops, "full": result.tokens.full},
        "seconds": result.seconds,
        "turns": result.turns,
        # the attention policy's look: its confidence, the attention grid over the view, the box
        **({"attention": result.attention} if result.attention else {}),
        # the request's visual-token budget (max_rtr, max_crops) where it set one; rtr is what it spent
        **({"budget": result.budget} if result.budget else {}),
    }


class ChatHandler:
    """``POST /v1/chat/completions`` for the AwaRes protocol (vLLM's ``OpenAIServingChat`` is the
    model): a request is read within the size limit, parsed and checked on its own, queued on the
    batcher, and answered as a completion or a stream. Every failure is OpenAI's error JSON."""

    def __init__(self, engines: dict[str, Engine], config: ServeConfig, metrics: Metrics):
        self.engines, self.config, self.metrics = engines, config, metrics
        self.batcher = Batcher(self.run, config.max_batch, config.max_wait_ms, config.queue_size)

    # -- on the worker thread, the only one that touches the models and their tokenizers

    def run(self, key: tuple[Any, ...], jobs: list[tuple[Any, Any]]) -> list[tuple[Any, int]]:
        """A group of jobs of one ``requests.batch_key``: each a request and, when it streams, the
        sink its answer text so far goes to; their results and question tokens."""
        policy, max_tokens, sampling, _ = key
        payloads, sinks = [p for p, _ in jobs], [s for _, s in jobs]
        on_text = (lambda i, text: sinks[i] and sinks[i](text)) if any(sinks) else None
        return self.generate(policy, payloads, max_tokens, sampling, on_text)

    def generate(
        self, policy: str, payloads: list[Any], max_tokens: int, sampling: Sampling, on_text: Any
    ) -> list[tuple[Any, int]]:
        engine = self.engines[policy]
        results = engine.answer_batch(
            payloads, policy, batch_size=len(payloads), max_new_tokens=max_tokens, sampling=sampling, on_text=on_text
        )
        return [(result, engine.question_tokens(r.question)) for result, r in zip(results, payloads)]

    # -- per request, before the batcher

    def prepare(self, payload: Any) -> tuple[Any, ChatCompletionRequest]:
        """The job and the checked request (raises ``BadRequest``)."""
        request = parse_request(payload, self.config.model_name, SERVED_POLICIES, self.config.max_tokens)
        image, question = parse_chat(request, self.config.limits)
        budget = request.awares
        return EngineRequest(image, question, max_rtr=budget.max_rtr, max_crops=budget.max_crops), request

    def completion(self, result: Any, tokens: int) -> ChatCompletion:
        self.metrics.tokens.labels("used").inc(result.tokens.view + result.tokens.crops)
        self.metrics.tokens.labels("full").inc(result.tokens.full)
        self.metrics.rtr.observe(result.rtr)
        return completion(result, self.config.model_name, tokens, self.engines["crops"].config.min_crop_side)

    async def __call__(self, request: Request) -> Response:
        began = time.perf_counter()
        try:
            response = await self._answer(request, began)
        except Exception as err:  # a bug: this request alone gets OpenAI's error JSON, the server goes on
            response = _error(500, f"internal error: {type(err).__name__}: {err}")
        if not isinstance(response, StreamingResponse):  # a stream is counted when it ends (_events)
            self._count(str(response.status_code), began)
        return response

    def _count(self, status: str, began: float) -> None:
        self.metrics.requests.labels(status).inc()
        self.metrics.latency.observe(time.perf_counter() - began)

    async def _body(self, request: Request) -> bytes:
        """The request's body, refused (413) as soon as it passes the limit, never read whole first."""
        limit, declared = self.config.max_request_bytes, request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"the request is {int(declared):,} bytes; the limit is {limit:,}")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise BadRequest(413, f"the request is over {limit:,} bytes, the limit")
        return bytes(body)

    @staticmethod
    def _parse(body: bytes) -> Any:
        try:
            return json.loads(body)
        except UnicodeDecodeError as err:
            raise BadRequest(400, f"the body is not valid UTF-8: {err.reason} at byte {err.start}") from err
        except json.JSONDecodeError as err:
            raise BadRequest(400, f"the body is not JSON: {err}") from err
        except RecursionError as err:
            raise BadRequest(400, "the body is nested too deeply to be a chat request") from err

    async def _answer(self, request: Request, began: float) -> Response:
        texts: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        with self.batcher.arriving():
            try:
                body = await self._body(request)
                job, options = await asyncio.to_thread(lambda: self.prepare(self._parse(body)))
            except BadRequest as err:
                return _error(err.status, err.message, err.param)
            sink = (lambda text: loop.call_soon_threadsafe(texts.put_nowait, text)) if options.stream else None
            try:
                done = asyncio.wrap_future(self.batcher.submit((job, sink), batch_key(options)))
            except QueueFull as err:
                return _error(503, f"the server is busy ({err}); retry shortly", headers={"Retry-After": "1"})
        if options.stream:
            first = asyncio.ensure_future(texts.get())
            await asyncio.wait({first, done}, return_when=asyncio.FIRST_COMPLETED)
            if not first.done() and done.exception() is not None:  # failed before any text
                first.cancel()
                status = 400 if isinstance(done.exception(), AwaresError) else 500
                return _error(status, str(done.exception()))
            events = self._events(first, texts, done, options, began)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            result, tokens = await done
        except AwaresError as err:  # the engine refused the question (too long, control tokens)
            return _error(400, str(err))
        return JSONResponse(self.completion(result, tokens).model_dump())

    async def _events(
        self,
        getter: asyncio.Future,
        texts: asyncio.Queue,
        done: asyncio.Future,
        options: ChatCompletionRequest,
        began: float,
    ):
        """``_stream``'s events, counted in the metrics when the stream ends: 200, the status of an
        error it carried, or ``disconnect`` when the client left first."""
        status = "disconnect"
        try:
            async for event, ending in self._stream(getter, texts, done, options):
                status = ending
                yield event
        finally:
            self._count(status, began)

    async def _stream(
        self, getter: asyncio.Future, texts: asyncio.Queue, done: asyncio.Future, options: ChatCompletionRequest
    ):
        """The answer as it is decoded: deltas of its text so far (whitespace at its ends held back,
        as the final answer is stripped), then the rest of the final answer, the finish, usage; an
        error after the first event ends the stream with an error event and ``[DONE]``. Yields each
        event with the status the stream has if it ends after it."""
        name, model, going = completion_id(), self.config.model_name, "disconnect"

        def event(delta: Delta | None, finish: str | None = None, **extra: Any) -> str:
            choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish)]
            return ChatCompletionChunk(id=name, model=model, choices=choices, **extra).event()

        yield event(Delta(role="assistant", content="")), going
        sent = ""
        while True:
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            arrived = [getter.result()] if getter.done() else []
            while not texts.empty():
                arrived.append(texts.get_nowait())
            for text in arrived:
                visible = text.rstrip("\ufffd").strip()  # an unfinished UTF-8 character waits for its bytes
                if visible.startswith(sent) and len(visible) > len(sent):
                    yield event(Delta(content=visible[len(sent) :])), going
                    sent = visible
            if done.done():
                break
            if getter.done():
                getter = asyncio.ensure_future(texts.get())
        getter.cancel()
        try:
            result, tokens = done.result()
            whole = self.completion(result, tokens)
        except Exception as err:  # the client's (400) or a bug (500): the stream ends, and says why
            status = 400 if isinstance(err, AwaresError) else 500
            yield f"data: {ErrorResponse.of(status, str(err)).model_dump_json()}\n\n", going
            yield "data: [DONE]\n\n", str(status)
            return
        if whole.text.startswith(sent) and len(whole.text) > len(sent):
            yield event(Delta(content=whole.text[len(sent) :])), going
        yield event(Delta(), "stop", awares=whole.awares), going
        if options.include_usage:
            yield event(None, usage=whole.usage), going
        yield "data: [DONE]\n\n", "200"


class RawChatHandler(ChatHandler):
    """A plain VLM endpoint (``awares serve --raw``): whole conversations (any turns, several
    images) answered in one pass by the engine's backend, without the protocol, as vLLM serves a
    checkpoint; what ``OpenAIBackend`` runs the two turns against."""

    def generate(
        self, policy: str, payloads: list[Any], max_tokens: int, sampling: Sampling, on_text: Any
    ) -> list[tuple[Any, int]]:
        backend = self.engines["crops"].backend
        decode = backend.processor.tokenizer.decode
        stream = (lambda row, ids: on_text(row, decode(ids, skip_special_tokens=True))) if on_text else None
        turn = backend.generate(payloads, max_new_tokens=max_tokens, stream=stream, sampling=sampling)
        return [(text, len(ids)) for text, ids in zip(turn.texts, turn.ids)]

    def prepare(self, payload: Any) -> tuple[Any, ChatCompletionRequest]:
        request = parse_request(payload, self.config.model_name, SERVED_POLICIES, self.config.max_tokens)
        return parse_conversation(request, self.config.limits), request

    def completion(self, result: Any, tokens: int) -> ChatCompletion:
        return ChatCompletion(
            model=self.config.model_name,
            choices=[Choice(message=AssistantMessage(content=result))],
            usage=Usage(completion_tokens=tokens),
        )


def create_app(engine: Engine | dict[str, Engine], config: ServeConfig | None = None, raw: bool = False) -> FastAPI:
    """The server app around ``engine`` (or an engine per served policy, as ``awares ask`` would run
    each; their models run on the batcher's one worker thread); with ``raw``, ``RawChatHandler``."""
    config = config or ServeConfig()
    metrics = Metrics()
    engines = engine if isinstance(engine, dict) else dict.fromkeys(SERVED_POLICIES, engine)
    handler = (RawChatHandler if raw else ChatHandler)(engines, config, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        handler.batcher.close()

    app = FastAPI(title="awares", description=__doc__, lifespan=lifespan)
    app.state.batcher, app.state.metrics = handler.batcher, metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        return _error(400, str(err))

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await handler(request)

    @app.get("/", response_class=HTMLResponse)
    def demo() -> str:
        return DEMO_PAGE.read_text()

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "owned_by": "awares"}]}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "queued": handler.batcher.queue.qsize(),
            "worker_alive": handler.batcher.worker.is_alive(),
        }

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

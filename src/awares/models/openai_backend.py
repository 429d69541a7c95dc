"""Each turn on an OpenAI-compatible VLM server (vLLM, SGLang, llama.cpp, ``awares serve --raw``).

Turn 2 sends the whole two-turn conversation with the crops as the second user turn: the server's
prefix cache (vLLM's ``--enable-prefix-caching``) reuses the turn-1 prefix, as ``HFBackend.extend``
reuses its KV cache in process. The processor (read from a local folder holding the checkpoint's
tokenizer and ``preprocessor_config.json``) counts visual tokens exactly as the server's model sees them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from ..hub import resolve_model
from ..protocol import Message, images_of
from .backend import GREEDY, Sampling, Stream, Turn
from .chat import ChatTemplate
from .endpoint import ChatClient, EndpointError, data_url
from .families import Family, family_of
from .processor import load_processor, model_type
from .servers import detect_engine, engine_named, guided_body

ENCODED_KEPT = 64  # images whose data URLs a backend keeps (a batch's views, until their turn 2)


def to_openai(messages: list[Message], encode: Callable[[Image.Image], str] = data_url) -> list[dict[str, Any]]:
    """Chat messages with inline PIL images as OpenAI messages with ``data:`` image URLs (``encode``)."""
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                image = part["image"]
                image = image if isinstance(image, Image.Image) else Image.open(image)
                parts.append({"type": "image_url", "image_url": {"url": encode(image)}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        text_only = all(p["type"] == "text" for p in parts)
        out.append({"role": message["role"], "content": "".join(p["text"] for p in parts) if text_only else parts})
    return out


class OpenAIBackend:
    """``generate`` and ``extend`` as chat completions on ``base_url`` (one request per conversation,
    ``concurrency`` at a time, so the server can batch them).

    ``guided_calls`` constrains every turn to a call or an answer (``CALL_OR_ANSWER_REGEX``) in the
    form the server's engine enforces (``servers.ENGINES``: vLLM's structured outputs, SGLang's
    regex, llama.cpp's GBNF grammar), so a turn that starts a call always parses. ``engine`` names
    the engine, or ``auto`` asks the server; guided calls on an engine that cannot enforce them are
    an error. They do not skip decoding steps (the server decodes the call's fixed syntax token by
    token) and cost the server a token mask per step; off by default.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        processor: Any,
        api_key: str = "EMPTY",
        timeout: float = 120.0,
        max_retries: int = 2,
        concurrency: int = 16,
        guided_calls: bool = False,
        engine: str = "auto",
        family: Family | None = None,
    ):
        self.base_url, self.model, self.processor, self.tokenizer = base_url, model, processor, processor.tokenizer
        self.template = ChatTemplate(processor, family) if family else None
        self.usage_checked = False
        # The data URLs of the latest images sent, by identity: turn 2 resends turn 1's view.
        self.encoded: OrderedDict[int, tuple[Image.Image, str]] = OrderedDict()
        self.encoded_lock = threading.Lock()
        self.client = ChatClient(base_url, api_key, timeout, max_retries, pool=concurrency)
        self.concurrency = concurrency
        self.engine = None
        if engine != "auto":
            self.engine = engine_named(engine)
        elif guided_calls:  # only then does the engine matter enough to ask the server
            self.engine = detect_engine(base_url)
        self.extra_body = guided_body(self.engine, base_url) if guided_calls else None

    @classmethod
    def connect(
        cls, base_url: str, model: str, processor_dir: str | Path, revision: str | None = None, **options: Any
    ) -> OpenAIBackend:
        """A backend for ``model`` on ``base_url``, its processor read from ``processor_dir`` (a local
        folder, or a hub id at ``revision``)."""
        path = resolve_model(processor_dir, revision)
        return cls(base_url, model, load_processor(path), family=family_of(model_type(path)), **options)

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.base_url,
            "model": self.model,
            "engine": self.engine.name if self.engine else None,
            "guided_calls": self.extra_body is not None,
        }

    def generate(
        self,
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        limits: list[Any] | None = None,
        sampling: Sampling = GREEDY,
    ) -> Turn:
        """Turn 1: one completion per conversation (whole: ``stream`` is not called). ``limits`` are
        not sent (a server cannot mask crops by cost): the engine keeps a call within its budget."""
        if len(conversations) == 1:  # one request (what a server's turn mostly is): no thread to start
            texts = [self._complete(conversations[0], max_new_tokens, sampling)]
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(conversations))) as pool:
                texts = list(pool.map(lambda c: self._complete(c, max_new_tokens, sampling), conversations))
        tokenizer = self.processor.tokenizer
        return Turn(texts, [tokenizer(t).input_ids for t in texts], list(conversations))

    def extend(
        self,
        session: Any,
        rows: list[int],
        conversations: list[list[Message]],
        max_new_tokens: int = 64,
        stream: Stream | None = None,
        limits: list[Any] | None = None,
        sampling: Sampling = GREEDY,
    ) -> Turn:
        """Turn 2 for ``rows``: each whole conversation again (the server's prefix cache holds turn 1)."""
        return self.generate(conversations, max_new_tokens, sampling=sampling)

    def _encode(self, image: Image.Image) -> str:
        """``image``'s data URL, written once while it is among the last ``ENCODED_KEPT`` images sent."""
        with self.encoded_lock:
            kept = self.encoded.get(id(image))
            if kept and kept[0] is image:
                self.encoded.move_to_end(id(image))
                return kept[1]
        url = data_url(image)
        with self.encoded_lock:
            self.encoded[id(image)] = (image, url)  # the image is held, so its id is not reused meanwhile
            while len(self.encoded) > ENCODED_KEPT:
                self.encoded.popitem(last=False)
        return url

    def _complete(self, conversation: list[Message], max_new_tokens: int, sampling: Sampling) -> str:
        """One chat completion; ``sampling.top_k`` goes as vLLM's extra ``top_k`` where it is set."""
        body = {
            "model": self.model,
            "messages": to_openai(conversation, self._encode),
            "max_tokens": max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            **({"seed": sampling.seed} if sampling.seed is not None else {}),
            **({"top_k": sampling.top_k} if sampling.top_k else {}),
            **(self.extra_body or {}),
        }
        reply = self.client.post(body)
        text = self.client.text(reply)
        prompt_tokens = (reply.get("usage") or {}).get("prompt_tokens")
        if not self.usage_checked and self.template and prompt_tokens:
            self.usage_checked = True
            self._check_usage(conversation, prompt_tokens)
        return text

    def _check_usage(self, conversation: list[Message], prompt_tokens: int) -> None:
        """Once per backend: the server's prompt tokens against the processor's count of the same
        conversation. The visual tokens awares reports are the processor's, so a server that sizes
        images otherwise (llama.cpp's own image token bounds) is an error, not a silently wrong RTR."""
        images = images_of(conversation)
        inputs = self.processor(text=[self.template.prompt(conversation)], images=images or None)
        expected = len(inputs["input_ids"][0])
        if prompt_tokens != expected:
            raise EndpointError(
                f"{self.base_url} counts {prompt_tokens} prompt tokens where the processor counts {expected}: the "
                "server sizes images differently (for llama-server, the bounds `awares export gguf` prints: "
                "--image-min-tokens and --image-max-tokens)"
            )

"""A backend that runs each turn on an OpenAI-compatible VLM server (vLLM, SGLang, ``awares serve --raw``).

Turn 2 sends the whole two-turn conversation with the crops as the second user turn: the server's
prefix cache (vLLM's ``--enable-prefix-caching``) reuses the turn-1 prefix, as ``HFBackend.extend``
reuses its KV cache in process. The processor (read from a local folder holding the checkpoint's
tokenizer and ``preprocessor_config.json``) counts visual tokens exactly as the server's model sees them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from ..hub import resolve_model
from ..protocol import CALL_OR_ANSWER_REGEX, Message
from .backend import GREEDY, Sampling, Stream, Turn
from .endpoint import EndpointError, data_url
from .processor import load_processor


def to_openai(messages: list[Message]) -> list[dict[str, Any]]:
    """Chat messages with inline PIL images as OpenAI messages with ``data:`` image URLs."""
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                image = part["image"]
                image = image if isinstance(image, Image.Image) else Image.open(image)
                parts.append({"type": "image_url", "image_url": {"url": data_url(image)}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        text_only = all(p["type"] == "text" for p in parts)
        out.append({"role": message["role"], "content": "".join(p["text"] for p in parts) if text_only else parts})
    return out


class OpenAIBackend:
    """``generate`` and ``extend`` as chat completions on ``base_url`` (one request per conversation,
    ``concurrency`` at a time, so the server can batch them).

    ``guided_calls`` constrains every turn to ``CALL_OR_ANSWER_REGEX`` with vLLM's structured outputs
    (``structured_outputs.regex``, vLLM >= 0.10.2), so a turn that starts a call always parses. It
    does not skip decoding steps (vLLM decodes the call's fixed syntax token by token) and costs the
    server a token mask per step; it is off by default, and servers without structured outputs
    refuse or ignore the field.
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
    ):
        import openai

        self.base_url, self.model, self.processor, self.tokenizer = base_url, model, processor, processor.tokenizer
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self.concurrency = concurrency
        self.extra_body = {"structured_outputs": {"regex": CALL_OR_ANSWER_REGEX}} if guided_calls else None

    @classmethod
    def connect(
        cls, base_url: str, model: str, processor_dir: str | Path, revision: str | None = None, **options: Any
    ) -> OpenAIBackend:
        """A backend for ``model`` on ``base_url``, its processor read from ``processor_dir`` (a local
        folder, or a hub id at ``revision``)."""
        return cls(base_url, model, load_processor(resolve_model(processor_dir, revision)), **options)

    def describe(self) -> dict[str, Any]:
        return {"url": self.base_url, "model": self.model, "guided_calls": self.extra_body is not None}

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
        with ThreadPoolExecutor(min(self.concurrency, max(len(conversations), 1))) as pool:
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

    def _complete(self, conversation: list[Message], max_new_tokens: int, sampling: Sampling) -> str:
        """One chat completion; ``sampling.top_k`` goes as vLLM's extra ``top_k`` where it is set."""
        import openai

        extra_body = {**({"top_k": sampling.top_k} if sampling.top_k else {}), **(self.extra_body or {})}
        try:
            reply = self.client.chat.completions.create(
                model=self.model,
                messages=to_openai(conversation),
                max_tokens=max_new_tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                seed=sampling.seed,
                extra_body=extra_body or None,
            )
        except openai.OpenAIError as err:
            raise EndpointError(f"{self.base_url}: {type(err).__name__}: {err}") from err
        if not reply.choices or reply.choices[0].message.content is None:
            raise EndpointError(f"{self.base_url}: the reply holds no message")
        return reply.choices[0].message.content

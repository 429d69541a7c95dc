"""A client for OpenAI-compatible chat endpoints (vLLM, SGLang, llama.cpp, ...): the OpenAI backend's,
the judges' and the oracles'."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

import urllib3
from PIL import Image

from ..errors import AwaresError


class EndpointError(AwaresError):
    """The endpoint could not be reached, kept failing after retries, or sent no usable reply."""


def data_url(image: Image.Image) -> str:
    """``image`` as a base64 PNG data URL, the way OpenAI-compatible servers take inline images.
    zlib level 1: lossless as any level, and about twice as fast to write as PNG's default 6, for a
    larger upload to a server that is usually local."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class ChatClient:
    """POSTs to an OpenAI-compatible ``/chat/completions`` with a kept-alive connection pool.

    urllib3, not the openai client: its typed request and response layers cost milliseconds a
    request (docs/performance.md, "On llama.cpp"), two of which every AwaRes answer sends. The
    retries are the openai client's: connection errors, 408, 409, 429 and 5xx, with backoff,
    honouring Retry-After."""

    def __init__(
        self, base_url: str, api_key: str = "EMPTY", timeout: float = 60.0, max_retries: int = 2, pool: int = 16
    ):
        retry = urllib3.Retry(
            total=max_retries,
            backoff_factor=0.5,
            status_forcelist=(408, 409, 429, 500, 502, 503, 504),
            allowed_methods=None,
            raise_on_status=False,
        )
        self.base_url, self.url = base_url, base_url.rstrip("/") + "/chat/completions"
        self.http = urllib3.PoolManager(
            maxsize=pool,
            retries=retry,
            timeout=urllib3.Timeout(total=timeout),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
        )

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` posted; the server's JSON reply, or ``EndpointError`` in one line."""
        try:
            reply = self.http.request("POST", self.url, body=json.dumps(body).encode())
        except urllib3.exceptions.HTTPError as err:
            raise EndpointError(f"{self.base_url}: {type(err).__name__}: {err}") from err
        try:
            data = json.loads(reply.data)
        except ValueError:
            raise EndpointError(f"{self.base_url}: HTTP {reply.status}, not JSON: {reply.data[:200]!r}") from None
        if reply.status != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            message = error.get("message") if isinstance(error, dict) else error or data
            raise EndpointError(f"{self.base_url}: HTTP {reply.status}: {message}")
        return data

    def text(self, reply: dict[str, Any]) -> str:
        """The message of a chat completion ``reply``, or ``EndpointError``."""
        try:
            text = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise EndpointError(f"{self.base_url}: the reply holds no message")
        return text


@dataclass
class ChatEndpoint:
    """One model behind an OpenAI-compatible ``/v1/chat/completions`` (``ChatClient``'s retries and timeout)."""

    base_url: str
    model: str
    api_key: str = "EMPTY"
    timeout: float = 60.0
    max_retries: int = 3
    max_tokens: int = 64
    _client: ChatClient | None = field(default=None, init=False, repr=False)

    def complete(self, text: str, images: list[Image.Image] | None = None) -> str:
        """The model's reply to one user turn holding ``images`` then ``text`` (greedy)."""
        if self._client is None:
            self._client = ChatClient(self.base_url, self.api_key, self.timeout, self.max_retries)
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": data_url(im)}} for im in images or []
        ]
        content.append({"type": "text", "text": text})
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        return self._client.text(self._client.post(body))

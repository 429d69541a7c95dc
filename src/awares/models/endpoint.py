"""A client for any OpenAI-compatible chat endpoint (vLLM, SGLang, ...), used by judges and oracles."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class ChatEndpoint:
    """One model behind an OpenAI-compatible ``/v1/chat/completions``.

    Retries with exponential backoff (connection errors, 408/429/5xx) and the timeout are the
    ``openai`` client's own.
    """

    base_url: str
    model: str
    api_key: str = "EMPTY"
    timeout: float = 60.0
    max_retries: int = 3
    max_tokens: int = 64
    _client: Any = field(default=None, init=False, repr=False)

    def complete(self, text: str, images: list[Image.Image] | None = None) -> str:
        """The model's reply to one user turn holding ``images`` then ``text`` (greedy)."""
        import openai

        if self._client is None:
            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=self.max_retries
            )
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": data_url(im)}} for im in images or []
        ]
        content.append({"type": "text", "text": text})
        try:
            reply = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": content}],
                temperature=0.0,
                max_tokens=self.max_tokens,
            )
        except openai.OpenAIError as err:
            raise EndpointError(f"{self.base_url}: {type(err).__name__}: {err}") from err
        if not reply.choices or reply.choices[0].message.content is None:
            raise EndpointError(f"{self.base_url}: the reply holds no message")
        return reply.choices[0].message.content

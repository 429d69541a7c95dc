"""OpenAI chat-completion requests in, checked: one image and a question, or a clear 4xx."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..errors import AwaresError
from ..images import load_image
from ..paths import is_inside


class BadRequest(Exception):
    """A request the server refuses: ``status`` (400, 413, ...) and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Limits:
    """What a request may hold and where its image may come from (the ``awares serve`` flags)."""

    max_image_bytes: int = 20 << 20
    max_image_pixels: int = 50_000_000
    allowed_local_media_path: str | None = None  # images from files under this folder only
    allow_remote_images: bool = False  # http(s) URLs


def _decode(data: bytes, limits: Limits) -> Image.Image:
    if len(data) > limits.max_image_bytes:
        raise BadRequest(413, f"the image is {len(data):,} bytes; the limit is {limits.max_image_bytes:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > limits.max_image_pixels:
                raise BadRequest(413, f"the image is {image.width}x{image.height}; the limit is "
                                      f"{limits.max_image_pixels:,} pixels")  # fmt: skip
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadRequest(400, f"the image cannot be read: {err}") from err
    except OSError as err:
        raise BadRequest(400, f"the image is corrupt or truncated: {err}") from err
    try:
        return load_image(image)
    except AwaresError as err:
        raise BadRequest(400, str(err)) from err


def fetch_image(url: str, limits: Limits) -> Image.Image:
    """The image a ``data:`` URL holds, or (when allowed) a local file or an http(s) URL."""
    if url.startswith("data:"):
        header, _, body = url.partition(",")
        if not header.endswith(";base64"):
            raise BadRequest(400, "a data URL image must be base64 (data:image/png;base64,...)")
        try:
            return _decode(base64.b64decode(body, validate=True), limits)
        except (binascii.Error, ValueError) as err:
            raise BadRequest(400, f"the image's base64 is invalid: {err}") from err
    if url.startswith(("http://", "https://")):
        if not limits.allow_remote_images:
            raise BadRequest(400, "remote image URLs are refused (start the server with --allow-remote-images)")
        return _decode(_download(url, limits.max_image_bytes), limits)
    path = Path(url.removeprefix("file://"))
    root = limits.allowed_local_media_path
    if root is None:
        raise BadRequest(400, "local image paths are refused (start the server with --allowed-local-media-path DIR)")
    if not is_inside(path, Path(root)) or not path.is_file():
        raise BadRequest(403, f"{url!r} is not a file under the allowed media folder")
    return _decode(path.read_bytes()[: limits.max_image_bytes + 1], limits)


def _download(url: str, limit: int) -> bytes:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (http(s) only, by flag)
            return response.read(limit + 1)
    except OSError as err:
        raise BadRequest(400, f"the image URL cannot be fetched: {err}") from err


def _messages(body: Any) -> list[dict[str, Any]]:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "the request needs a non-empty 'messages' list")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise BadRequest(400, "each message needs a role: system, user or assistant")
    return messages


def _parts(message: dict[str, Any]) -> list[tuple[str, str]]:
    """A message's content as ``("text", text)`` and ``("image", url)`` parts."""
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise BadRequest(400, "a message's content is a string or a list of parts")
    out = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append(("text", part["text"]))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise BadRequest(400, "an image_url part needs a 'url'")
            out.append(("image", url))
        else:
            raise BadRequest(400, f"unsupported content part {str(part)[:80]}; use text and image_url parts")
    return out


def parse_chat(body: Any, limits: Limits) -> tuple[Image.Image, str]:
    """The image and the question of a chat request whose user turns hold exactly one image."""
    parts = [p for m in _messages(body) if m["role"] == "user" for p in _parts(m)]
    urls = [value for kind, value in parts if kind == "image"]
    if len(urls) != 1:
        raise BadRequest(400, f"a request holds exactly one image; this one holds {len(urls)}")
    question = "\n".join(value for kind, value in parts if kind == "text").strip()
    if not question:
        raise BadRequest(400, "the question is empty")
    return fetch_image(urls[0], limits), question


def parse_conversation(body: Any, limits: Limits, max_images: int = 16) -> list[dict[str, Any]]:
    """A whole chat (any turns, up to ``max_images`` images) as chat messages with PIL images: what a
    plain VLM server (``awares serve --raw``) answers."""
    messages = [(m["role"], _parts(m)) for m in _messages(body)]
    images = sum(kind == "image" for _, parts in messages for kind, _ in parts)
    if images > max_images:
        raise BadRequest(400, f"a request holds at most {max_images} images; this one holds {images}")
    if any(kind == "image" for role, parts in messages if role != "user" for kind, _ in parts):
        raise BadRequest(400, "images belong in user messages")

    def part(kind: str, value: str) -> dict[str, Any]:
        return (
            {"type": "image", "image": fetch_image(value, limits)} if kind == "image" else {"type": kind, kind: value}
        )

    return [{"role": role, "content": [part(*p) for p in parts]} for role, parts in messages]

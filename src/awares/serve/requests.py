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
from pydantic import ValidationError

from ..errors import AwaresError
from ..images import load_image
from ..paths import is_inside
from .schema import ChatCompletionRequest, ChatMessage, TextPart


class BadRequest(Exception):
    """A request the server refuses: ``status`` (400, 413, ...), a message for the client and the
    request field at fault (``param``), where there is one."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


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
    except ValueError as err:  # e.g. a PNG text chunk that inflates past Pillow's decompression limit
        raise BadRequest(400, f"the image cannot be read: {err} (Pillow's decompression limit)") from err
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
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BadRequest(400, f"the image's base64 is invalid: {err}") from err
        return _decode(data, limits)
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


def _parts(message: ChatMessage) -> list[tuple[str, str]]:
    """A message's content as ``("text", text)`` and ``("image", url)`` parts."""
    return [("text", p.text) if isinstance(p, TextPart) else ("image", p.url) for p in message.parts]


def parse_chat(request: ChatCompletionRequest, limits: Limits) -> tuple[Image.Image, str]:
    """The image and the question of a chat request whose user turns hold exactly one image."""
    if any(kind == "image" for m in request.messages if m.role != "user" for kind, _ in _parts(m)):
        raise BadRequest(400, "images belong in user messages; this request has one in another role's message")
    parts = [p for m in request.messages if m.role == "user" for p in _parts(m)]
    urls = [value for kind, value in parts if kind == "image"]
    if len(urls) != 1:
        raise BadRequest(400, f"a request holds exactly one image; this one holds {len(urls)}", "messages")
    question = "\n".join(value for kind, value in parts if kind == "text").strip()
    if not question:
        raise BadRequest(400, "the question is empty", "messages")
    return fetch_image(urls[0], limits), question


def parse_conversation(request: ChatCompletionRequest, limits: Limits, max_images: int = 16) -> list[dict[str, Any]]:
    """A whole chat (any turns, up to ``max_images`` images) as chat messages with PIL images: what a
    plain VLM server (``awares serve --raw``) answers."""
    messages = [(m.role, _parts(m)) for m in request.messages]
    images = sum(kind == "image" for _, parts in messages for kind, _ in parts)
    if images > max_images:
        raise BadRequest(400, f"a request holds at most {max_images} images; this one holds {images}", "messages")
    if any(kind == "image" for role, parts in messages if role != "user" for kind, _ in parts):
        raise BadRequest(400, "images belong in user messages", "messages")

    def part(kind: str, value: str) -> dict[str, Any]:
        return (
            {"type": "image", "image": fetch_image(value, limits)} if kind == "image" else {"type": kind, kind: value}
        )

    return [{"role": role, "content": [part(*p) for p in parts]} for role, parts in messages]


def parse_request(body: Any, model: str, policies: tuple[str, ...], max_tokens_limit: int) -> ChatCompletionRequest:
    """A chat request checked as vLLM checks it (``schema.ChatCompletionRequest``): 400 naming the
    field (``param``) for what cannot be honoured, 404 for another model, 400 for a policy this server
    does not run or more tokens than it allows."""
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as err:
        # the deepest error says most (a bad part of a list content, not that content is no string);
        # union branches (``str``, ``list[...]``) and validator names are left out of the field's path;
        problem = max(err.errors(), key=lambda e: len(e["loc"]))
        path = [str(part) for part in problem["loc"] if not _branch(part)]
        # a content part's tag repeats as its field's name (text.text): said once
        where = ".".join(part for i, part in enumerate(path) if i == 0 or part != path[i - 1])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "model_type":
            raise BadRequest(400, "the request body must be a JSON object") from err
        raise BadRequest(400, f"{where}: {message}" if where else message, where or None) from err
    if request.model is not None and request.model != model:
        raise BadRequest(404, f"The model `{request.model}` does not exist.", "model")
    if request.policy not in policies:
        raise BadRequest(400, f"unknown policy {request.policy!r}; choose {', '.join(policies)}", "policy")
    if request.limit > max_tokens_limit:
        raise BadRequest(400, f"max_tokens must be at most {max_tokens_limit} on this server", "max_tokens")
    return request


def _branch(part: Any) -> bool:
    return isinstance(part, str) and (part in ("str", "int", "float") or part.startswith(("function-", "list[")))


def batch_key(request: ChatCompletionRequest) -> tuple[Any, ...]:
    """What groups requests that one engine call can answer together: policy, token limit and
    sampling (a seeded request runs alone: its draw is its own)."""
    alone = id(request) if request.seed is not None else None
    return request.policy, request.limit, request.sampling, alone

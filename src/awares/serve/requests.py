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


def _messages(body: Any) -> list[dict[str, Any]]:
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        raise BadRequest(400, "the request needs a non-empty 'messages' list")
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise BadRequest(400, "each message needs a role: system, user or assistant")
    return messages


def _valid_text(text: str) -> str:
    """``text`` if it is valid Unicode (JSON's ``\\ud800`` escapes can make lone surrogates, which no
    tokenizer encodes), else a 400."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRequest(400, f"a text part is not valid Unicode: {err.reason} at character {err.start}") from err
    return text


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
            out.append(("text", _valid_text(part["text"])))
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
    messages = _messages(body)
    if any(kind == "image" for m in messages if m["role"] != "user" for kind, _ in _parts(m)):
        raise BadRequest(400, "images belong in user messages; this request has one in another role's message")
    parts = [p for m in messages if m["role"] == "user" for p in _parts(m)]
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


# Below this a temperature samples as greedy decoding would (vLLM's rule): 1e-40 is greedy, not a NaN.
SAMPLING_EPSILON = 1e-5
# OpenAI fields awares does not honour: refused with their name, as vLLM refuses what it cannot do.
UNSUPPORTED = (
    "logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call", "response_format",
    "logit_bias", "stop", "presence_penalty", "frequency_penalty", "prediction", "audio",
)  # fmt: skip


@dataclass(frozen=True)
class Budget:
    """A request's visual-token budget (its ``awares`` object): at most ``max_rtr`` of the full
    image's tokens, at most ``max_crops`` crops."""

    max_rtr: float | None = None
    max_crops: int | None = None


@dataclass(frozen=True)
class Options:
    """A chat request's generation options, checked as vLLM checks them. ``key`` groups requests
    that one engine call can answer together (a seeded request runs alone: its draw is its own)."""

    policy: str
    max_tokens: int
    temperature: float
    top_p: float
    stream: bool
    include_usage: bool
    seed: int | None = None
    budget: Budget = Budget()

    @property
    def key(self) -> tuple[Any, ...]:
        alone = id(self) if self.seed is not None else None
        return self.policy, self.max_tokens, self.temperature, self.top_p, self.seed, alone


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise BadRequest(400, f"{name} must be a number, not {value!r}")
    if value > high or value < low or (low_open and value == low):
        raise BadRequest(400, f"{name} must be in {'(' if low_open else '['}{low}, {high}]; got {value}")
    return float(value)


def parse_options(body: Any, model: str, policies: tuple[str, ...], max_tokens_limit: int) -> Options:
    """The options of a chat request: 404 for another model, 400 for what cannot be honoured (``n``
    other than 1, a non-numeric or out-of-range ``temperature`` or ``top_p``, ``stream_options``
    without ``stream``, a field of ``UNSUPPORTED``). ``temperature`` defaults to 0: greedy, as the
    protocol is evaluated; one under ``SAMPLING_EPSILON`` is greedy too."""
    if not isinstance(body, dict):
        raise BadRequest(400, "the request body must be a JSON object")
    for name in UNSUPPORTED:
        if body.get(name) not in (None, False):
            raise BadRequest(400, f"{name} is not supported by awares; leave it out")
    if body.get("model") is not None and body["model"] != model:
        raise BadRequest(404, f"The model `{body['model']}` does not exist.")
    if body.get("n") not in (None, 1):
        raise BadRequest(400, f"n must be 1 (one choice per request); got {body['n']!r}")
    policy = body.get("policy", "crops")
    if policy not in policies:
        raise BadRequest(400, f"unknown policy {policy!r}; choose {', '.join(policies)}")
    max_tokens = next((body[k] for k in ("max_tokens", "max_completion_tokens") if body.get(k) is not None), 32)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= max_tokens_limit:
        raise BadRequest(400, f"max_tokens must be an integer in 1..{max_tokens_limit}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(400, f"stream must be true or false, not {stream!r}")
    stream_options = body.get("stream_options")
    if stream_options is not None and (not stream or not isinstance(stream_options, dict)):
        raise BadRequest(400, "stream_options is an object, and only with stream: true")
    include_usage = bool((stream_options or {}).get("include_usage", False))
    temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
    temperature = 0.0 if temperature < SAMPLING_EPSILON else temperature
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise BadRequest(400, f"seed must be a non-negative integer, not {seed!r}")
    return Options(policy, max_tokens, temperature, top_p, stream, include_usage, seed, _budget(body))


def _budget(body: dict[str, Any]) -> Budget:
    """The ``awares`` object's ``max_rtr`` (in (0, 1]: a share of the full image's tokens) and
    ``max_crops`` (a count)."""
    extra = body.get("awares") or {}
    if not isinstance(extra, dict) or set(extra) - {"max_rtr", "max_crops"}:
        raise BadRequest(400, "awares is an object with max_rtr and max_crops")
    max_rtr = _number(extra, "max_rtr", 0.0, 0.0, 1.0, low_open=True) if "max_rtr" in extra else None
    max_crops = extra.get("max_crops")
    if max_crops is not None and (isinstance(max_crops, bool) or not isinstance(max_crops, int) or max_crops < 0):
        raise BadRequest(400, f"max_crops must be a non-negative integer, not {max_crops!r}")
    return Budget(max_rtr, max_crops)

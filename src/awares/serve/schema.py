"""OpenAI's chat-completion bodies as typed models: the request awares reads (checked strictly, as
vLLM checks it: ``max_tokens: true`` or ``temperature: "1"`` is a 400) and what it answers."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from ..models import Sampling

# OpenAI fields awares does not honour: refused with their name, as vLLM refuses what it cannot do.
UNSUPPORTED = (
    "logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call", "response_format",
    "logit_bias", "stop", "presence_penalty", "frequency_penalty", "prediction", "audio",
)  # fmt: skip

DEFAULT_MAX_TOKENS = 32  # an answer's tokens where a request sets no limit


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str

    @field_validator("text")
    @classmethod
    def _unicode(cls, text: str) -> str:
        """JSON's ``\\ud800`` escapes can make lone surrogates, which no tokenizer encodes."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"not valid Unicode: {err.reason} at character {err.start}") from err
        return text


class ImageURL(BaseModel):
    url: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL | str  # an object with a url, or (as some clients send it) the URL itself

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True)  # other fields (name, ...) are ignored, as OpenAI does

    role: Literal["system", "user", "assistant"]
    content: str | list[Part]

    @property
    def parts(self) -> list[TextPart | ImagePart]:
        if isinstance(self.content, str):
            return [TextPart(type="text", text=self.content)]
        return list(self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class Budget(_Strict):
    """A request's visual-token budget (its ``awares`` object): at most ``max_rtr`` of the full
    image's tokens, at most ``max_crops`` crops."""

    max_rtr: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_crops: int | None = Field(None, ge=0)


class ChatCompletionRequest(BaseModel):
    """A chat request. ``temperature`` defaults to 0: greedy, as the protocol is evaluated; one
    under ``SAMPLING_EPSILON`` is greedy too. Unknown fields are ignored, as OpenAI ignores them,
    except those of ``UNSUPPORTED``."""

    model_config = ConfigDict(strict=True, extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    policy: str = "crops"
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: Literal[1] = 1  # one choice per request
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    awares: Budget = Field(default_factory=Budget)

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, body: Any) -> Any:
        for name in UNSUPPORTED:
            if isinstance(body, dict) and body.get(name) not in (None, False):
                raise ValueError(f"{name} is not supported by awares; leave it out")
        return body

    @model_validator(mode="after")
    def _stream_options(self) -> ChatCompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options goes only with stream: true")
        return self

    @property
    def limit(self) -> int:
        """The tokens the answer may take (``max_completion_tokens``, or the older ``max_tokens``)."""
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


# -- what the server answers


class _Sparse(BaseModel):
    """Written without the fields it does not have (None), as OpenAI writes them."""

    @model_serializer(mode="wrap")
    def _present(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """OpenAI's error object: message, type, param, code."""

    error: ErrorInfo

    @classmethod
    def of(cls, status: int, message: str, param: str | None = None) -> ErrorResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return cls(error=ErrorInfo(message=message, type=kind, param=param, code=status))


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class PromptTokensDetails(BaseModel):
    visual_tokens: int  # view and crops, as used
    visual_tokens_full_image: int  # what full resolution would have cost


class Usage(_Sparse):
    prompt_tokens: int | None = None  # None where the server does not count them (``--raw``)
    completion_tokens: int
    total_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletion(_Sparse):
    """A ``chat.completion``; ``awares`` reports the protocol's run (``app.report``)."""

    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    awares: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return self.choices[0].message.content


class Delta(_Sparse):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion; the last holds the ``awares`` report, and
    with ``include_usage`` one more, without choices, the usage."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    awares: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _present(self, handler: Any) -> dict[str, Any]:
        """Without ``usage`` and ``awares`` where a chunk has none (``finish_reason`` stays, null)."""
        return {k: v for k, v in handler(self).items() if v is not None or k not in ("usage", "awares")}

    def event(self) -> str:
        return f"data: {self.model_dump_json()}\n\n"

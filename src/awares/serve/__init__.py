"""Serving: an OpenAI-compatible HTTP API with dynamic batching."""

from .app import ServeConfig, completion, create_app
from .batcher import Batcher, QueueFull
from .requests import BadRequest, Limits, parse_chat

__all__ = ["BadRequest", "Batcher", "Limits", "QueueFull", "ServeConfig", "completion", "create_app", "parse_chat"]

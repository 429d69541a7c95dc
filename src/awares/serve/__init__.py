"""Serving: an OpenAI-compatible HTTP API with dynamic batching, and its demo page."""

from .app import ServeConfig, completion, create_app, serve_in_thread
from .batcher import Batcher, QueueFull
from .requests import BadRequest, Limits, parse_chat

__all__ = [
    "BadRequest",
    "Batcher",
    "Limits",
    "QueueFull",
    "ServeConfig",
    "completion",
    "create_app",
    "parse_chat",
    "serve_in_thread",
]

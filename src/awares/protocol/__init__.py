"""The crop-retrieval protocol: system prompt, tool-call parsing and message building."""

from .messages import Message, crops_messages, images_of, turn1_messages, turn2_messages
from .parse import Answer, CropCall, Parsed, ParseError, may_become_call, parse_lenient, parse_response, parse_strict
from .prompt import CALL_OR_ANSWER_REGEX, CALL_PREFIX, SYSTEM_PROMPT, format_call

__all__ = [
    "CALL_OR_ANSWER_REGEX",
    "CALL_PREFIX",
    "SYSTEM_PROMPT",
    "Answer",
    "CropCall",
    "Message",
    "ParseError",
    "Parsed",
    "crops_messages",
    "format_call",
    "images_of",
    "may_become_call",
    "parse_lenient",
    "parse_response",
    "parse_strict",
    "turn1_messages",
    "turn2_messages",
]

"""Chat messages of the two turns, in the HF conversational format: images inline (PIL) or as paths
(stored trajectories)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from .prompt import SYSTEM_PROMPT

Message = dict[str, Any]


def image_part(image: Image.Image | str) -> dict[str, Any]:
    return {"type": "image", "image": image}


def turn1_messages(
    low_res: Image.Image | str, question: str, system_prompt: str | None = SYSTEM_PROMPT
) -> list[Message]:
    """System prompt (omitted when ``None``), then the low-res view and the question."""
    messages: list[Message] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": [image_part(low_res), {"type": "text", "text": question}]})
    return messages


def crops_messages(crops: list[Image.Image] | list[str], question: str) -> list[Message]:
    """One user turn: the crops, then the question (the ``attention`` policy's second pass)."""
    return [{"role": "user", "content": [*(image_part(c) for c in crops), {"type": "text", "text": question}]}]


def turn2_messages(turn1: list[Message], call_text: str, crops: list[Image.Image] | list[str]) -> list[Message]:
    """Turn 1, the assistant's tool call, then a user turn holding only the crops in requested order."""
    return [
        *turn1,
        {"role": "assistant", "content": [{"type": "text", "text": call_text}]},
        {"role": "user", "content": [image_part(c) for c in crops]},
    ]


def images_of(messages: list[Message]) -> list[Image.Image]:
    """The images of a conversation in order of appearance."""
    return [
        part["image"]
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image"
    ]

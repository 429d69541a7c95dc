"""Turn chat conversations with images into model inputs whose labels cover assistant tokens only."""

from __future__ import annotations

from typing import Any

import torch

from ..protocol import Message, images_of

IGNORE_INDEX = -100


def assistant_spans(ids: list[int], start: list[int], end_id: int) -> list[tuple[int, int]]:
    """``[begin, end)`` spans of assistant content: after each ``start`` marker, through the next ``end_id``."""
    spans, n, i = [], len(start), 0
    while i <= len(ids) - n:
        if ids[i : i + n] == start:
            begin = i + n
            end = begin
            while end < len(ids) and ids[end] != end_id:
                end += 1
            spans.append((begin, min(end + 1, len(ids))))
            i = end
        else:
            i += 1
    return spans


class ChatCollator:
    """Batch conversations for training with a Qwen2-VL-style processor.

    Labels are the input ids on assistant content and its closing end-of-turn token, ``-100``
    elsewhere (system, user, images, padding).
    """

    def __init__(self, processor: Any):
        self.processor = processor
        tok = processor.tokenizer
        self.start = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")

    def __call__(self, conversations: list[list[Message]]) -> dict[str, torch.Tensor]:
        texts = [self.processor.apply_chat_template(c, tokenize=False) for c in conversations]
        images = [im for c in conversations for im in images_of(c)]
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, ids in enumerate(batch["input_ids"].tolist()):
            for begin, end in assistant_spans(ids, self.start, self.end_id):
                labels[row, begin:end] = batch["input_ids"][row, begin:end]
        batch["labels"] = labels
        return dict(batch)

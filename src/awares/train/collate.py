"""Turn chat conversations with images into model inputs whose labels cover assistant tokens only."""

from __future__ import annotations

from typing import Any

import torch

from ..models.chat import ChatTemplate
from ..models.families import Family
from ..protocol import CALL_PREFIX, Message, images_of

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
    """Batch conversations for training with the processor of a ``family`` checkpoint, each
    rendered as the backend decodes it (``ChatTemplate.render``).

    Labels are the input ids on assistant content and its closing end-of-turn token, ``-100``
    elsewhere (system, user, images, padding). With ``call_weight`` the batch also holds
    ``loss_weights``: ``call_weight`` on the tokens of assistant turns that are tool calls, 1 on other
    assistant tokens, 0 elsewhere; with ``crop_weight`` too, the tokens that name crops inside a call
    (``3`` and ``all`` in ``GET_CROPS: ['3', 'all']``) weigh ``crop_weight`` instead.
    """

    def __init__(
        self, processor: Any, family: Family, call_weight: float | None = None, crop_weight: float | None = None
    ):
        self.processor, self.call_weight, self.crop_weight = processor, call_weight, crop_weight
        self.template = ChatTemplate(processor, family)
        tok = processor.tokenizer
        self.start = tok.encode(self.template.generation_prompt, add_special_tokens=False)
        self.end_id = tok.convert_tokens_to_ids("<|im_end|>")

    def __call__(self, conversations: list[list[Message]]) -> dict[str, torch.Tensor]:
        texts = [self.template.render(c) for c in conversations]
        images = [im for c in conversations for im in images_of(c)]
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        weights = torch.zeros(labels.shape, dtype=torch.float32)
        for row, ids in enumerate(batch["input_ids"].tolist()):
            for begin, end in assistant_spans(ids, self.start, self.end_id):
                labels[row, begin:end] = batch["input_ids"][row, begin:end]
                is_call = self.processor.tokenizer.decode(ids[begin:end]).lstrip().startswith(CALL_PREFIX)
                weights[row, begin:end] = self.call_weight if is_call and self.call_weight else 1.0
                if is_call and self.crop_weight:
                    for i in self.crop_id_positions(ids[begin:end]):
                        weights[row, begin + i] = self.crop_weight
        batch["labels"] = labels
        if self.call_weight is not None:
            batch["loss_weights"] = weights
        return dict(batch)

    def crop_id_positions(self, call_ids: list[int]) -> list[int]:
        """Positions of the tokens after ``GET_CROPS:`` that carry letters or digits: the crop ids."""
        tok, text, positions = self.processor.tokenizer, "", []
        for i, token_id in enumerate(call_ids):
            piece = tok.decode([token_id])
            if CALL_PREFIX in text and any(c.isalnum() for c in piece) and token_id != self.end_id:
                positions.append(i)
            text += piece
        return positions

"""The training-free ``attention`` policy: AwaRes without a trained policy, for any checkpoint of a
supported family on the in-process backend.

The low-res answer is redone on crops when its first token is less probable than
``confidence_threshold`` or when the question's last token puts at least ``attention_focus`` of its
attention over the view on one visual token (it looks at a detail), at softmax-attention layer
``layer``. The crops cover the cells of at least ``share`` of the peak's weight around the peak,
``margin`` cells wider on each side. ``where`` is the same rule on the full image: a grounding
oracle that needs no other model (``awares curate --oracle attention``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..crops import CROP_NAMES, Box, boxes_to_crops, coverage, extract_crops
from ..errors import InputError
from ..images import load_image
from ..models.decoding import NO_CALL
from ..protocol import Message, crops_messages, turn1_messages

if TYPE_CHECKING:
    from .engine import Engine, Result, _Batch


@dataclass
class AttentionConfig:
    """When the ``attention`` policy looks closer and where. Defaults: the shipped base, chosen on
    val (docs/experiments/attention.md)."""

    confidence_threshold: float = 0.9
    focus: float = 0.6
    layer: int = -1  # among the softmax-attention layers (a hybrid family's linear-attention ones have none)
    share: float = 0.5
    margin: float = 0.5


def answer_with_attention(engine: Engine, batch: _Batch) -> list[Result]:
    """Answer from the low-res view; where that answer is unsure or the question looks at a detail,
    answer again from the crops covering where it looks (question alone)."""
    _check_reads_attention(engine)
    config, rule = engine.config, engine.config.attention
    conversations = [turn1_messages(v, r.question, None) for v, r in zip(batch.views, batch.requests)]
    no_calls = [NO_CALL] * len(conversations)  # both passes answer: a call is masked while decoding
    turn1, seconds1 = engine._timed(
        engine.backend.generate, batch, conversations, attention_layer=rule.layer, limits=no_calls
    )
    looks = {
        i: {"confidence": turn1.confidence[i], **look(engine, turn1.attention[i], image, view)}
        for i, (image, view) in enumerate(zip(batch.images, batch.views))
    }
    unsure = [i for i, x in looks.items() if x["confidence"] < rule.confidence_threshold or x["focus"] >= rule.focus]
    crops = {
        i: boxes_to_crops([Box(*looks[i]["box"])], *batch.images[i].size, min_side=config.min_crop_side).crop_ids
        for i in unsure
    }
    second: dict[int, tuple[str, list[int], list[Message], list[Image.Image]]] = {}
    seconds2 = 0.0
    affordable = {
        i: _affordable(engine, batch.images[i], batch.views[i], Box(*looks[i]["box"]), crops[i]) for i in unsure
    }
    crops = {i: ids for i, (ids, images) in affordable.items() if images}
    crop_images = {i: images for i, (_, images) in affordable.items() if images}
    unsure = sorted(crop_images)  # an image whose view is already its whole budget keeps the view's answer
    if unsure:
        follow_ups = [crops_messages(crop_images[i], batch.requests[i].question) for i in unsure]
        turn2, seconds2 = engine._timed(
            engine.backend.generate, batch.select(unsure), follow_ups, limits=no_calls[: len(unsure)]
        )
        second = {
            i: (text, ids, m, crop_images[i]) for i, text, ids, m in zip(unsure, turn2.texts, turn2.ids, follow_ups)
        }
    results = []
    for i, text in enumerate(turn1.texts):
        fields: dict[str, Any] = {"answer": text.strip(), "turns": [text], "seconds": [seconds1]}
        fields |= {"token_ids": [turn1.ids[i]], "attention": looks[i]}
        messages, shown = conversations[i], []
        if i in second:
            text2, ids2, messages, shown = second[i]
            fields |= {"answer": text2.strip(), "turns": [text, text2], "seconds": [seconds1, seconds2]}
            fields |= {"token_ids": [turn1.ids[i], ids2], "crops": crops[i], "parse_status": "call"}
        results.append(engine._result("attention", batch.images[i], batch.views[i], shown, messages, **fields))
    return results


def _affordable(
    engine: Engine, image: Image.Image, view: Image.Image, box: Box, crop_ids: tuple[str, ...]
) -> tuple[tuple[str, ...], list[Image.Image]]:
    """The crops ``crop_ids`` of ``image``; where they and ``view`` would cost more visual tokens
    than the full image (a box across the image: ``all``, or crops that overlap), the crops within
    that cost that cover most of ``box`` (the cheaper on a tie): the policy never costs more than
    full resolution (RTR <= 1). None where the view is already the whole image's cost."""
    grid, side = engine.grid, engine.config.min_crop_side
    left = grid.tokens(*image.size) - grid.tokens(*view.size)
    cost = engine.crop_costs(image)
    if sum(cost[c] for c in crop_ids) > left:
        subsets = [s for n in (1, 2, 3) for s in combinations(CROP_NAMES, n) if sum(cost[c] for c in s) <= left]
        share = {s: coverage([box], s, *image.size, min_side=side) for s in subsets}
        crop_ids = max(subsets, key=lambda s: (share[s], -sum(cost[c] for c in s))) if subsets else ()
    return crop_ids, extract_crops(image, crop_ids, side)


def where(engine: Engine, image: Image.Image | str, question: str) -> Box:
    """Where ``engine``'s model looks to answer ``question`` about the full-resolution ``image``: the
    box of its attention's peak region (the ``attention`` policy's rule)."""
    _check_reads_attention(engine)
    engine.check_question(question)
    image = load_image(image)
    turn = engine.backend.generate(
        [turn1_messages(image, question, None)], max_new_tokens=1, attention_layer=engine.config.attention.layer
    )
    return Box(*look(engine, turn.attention[0], image, image)["box"])


def _check_reads_attention(engine: Engine) -> None:
    if not getattr(engine.backend, "reads_attention", False):
        raise InputError("the attention policy reads the model's attention: use the in-process HF backend")


def look(engine: Engine, attention: Any, image: Image.Image, view: Image.Image) -> dict[str, Any]:
    """An attention row over ``view``'s visual tokens as a grid, its focus (the peak's share), and
    the box on ``image`` that the crops must cover."""
    grid, rule = engine.grid, engine.config.attention
    width, _ = grid.resized(*view.size)
    weights = attention.float().view(-1, width // grid.cell)
    box = attention_box(weights, rule.share, rule.margin, image.size)
    focus = float(weights.max() / weights.sum())
    return {"focus": focus, "grid": weights.tolist(), "box": list(box.as_tuple())}


def attention_box(weights: Any, share: float, margin: float, size: tuple[int, int]) -> Box:
    """The box, on a ``size`` image, of the cells of an attention grid over its view (rows x
    columns of weights) that hold at least ``share`` of the peak's weight and connect to the peak,
    ``margin`` cells wider on each side."""
    rows, columns = weights.shape
    cell_w, cell_h = size[0] / columns, size[1] / rows
    strong = weights >= share * weights.max()
    peak = divmod(int(weights.argmax()), columns)
    region, frontier = {peak}, [peak]
    while frontier:
        r, c = frontier.pop()
        for near in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= near[0] < rows and 0 <= near[1] < columns and near not in region and strong[near]:
                region.add(near)
                frontier.append(near)
    r0, r1 = min(r for r, _ in region) - margin, max(r for r, _ in region) + 1 + margin
    c0, c1 = min(c for _, c in region) - margin, max(c for _, c in region) + 1 + margin
    x0, y0 = max(0, int(c0 * cell_w)), max(0, int(r0 * cell_h))
    return Box(x0, y0, min(size[0], int(c1 * cell_w)), min(size[1], int(r1 * cell_h)))

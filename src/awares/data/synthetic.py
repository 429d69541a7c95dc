"""A seeded synthetic high-resolution VQA benchmark where the accuracy/resolution trade-off is real.

Every image holds one to three large shapes of one kind and colour (visible at any resolution) and
one small tag (12x10 px, black frame) filled with a 1-pixel checkerboard of a colour and its
complement. At full resolution the checkerboard names the tag's colour; every 2x2 block of it
averages to the same grey, so at half resolution all tags look alike. *Global* questions ask about
the shapes' colour or the background's; *detail* questions ask for the tag's colour. Image
sides are multiples of 112 px and tags sit on the 28-px grid of merged tokens (or straddle a
midline), so neither the full image, its half-resolution view nor any crop of the set is resampled
by the Qwen2-VL processor: what the model sees is exactly what was drawn. (With tags at any 14-px
offset inside a token, the from-scratch tiny model did not learn to read them within budget.)

Why a colour checkerboard and not printed digits: a from-scratch tiny model on a 2-core CPU did not
learn to read 3x5-pixel glyphs within its training budget (no progress in 1,200 steps even on a
one-token image), while it learns colour codes quickly; the checkerboard keeps the property that
matters here, evidence that exists only at full resolution. Likewise the global questions read a
colour off a large area. Tried first and not learnt by the tiny model within budget: POPE-style "is
there a red shape?" (always "no", 50% after 1,100 steps), the shapes' kind and count (chance after
1,100-2,400 steps, while their colour reached 72-79%).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from ..crops import Box

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 200),
    "yellow": (230, 190, 20),
    "purple": (148, 83, 189),
    "orange": (245, 127, 14),
}
SHAPES = ("circle", "square", "triangle")
SIDES = tuple(range(224, 561, 112))  # 224 .. 560 px: halves and quarters stay on the 28-px grid
CELL = 28  # tags sit on the 28-px grid of merged tokens: one position per token

# Colours of the tag codes; each alternates with its complement (255 - c), so all average to grey.
TAG_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "orange": (255, 128, 0),
    "purple": (128, 0, 255),
    "pink": (255, 0, 128),
}
TAG_W, TAG_H = 12, 10

# Background tints: a global property with names of its own (none is a shape or tag colour).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 236),
    "gray": (185, 185, 185),
    "cream": (240, 226, 186),
    "mint": (196, 236, 206),
    "sky": (196, 218, 246),
}
GLOBAL_TEMPLATES = {
    "color": ["What color are the large shapes?", "Which color do the big shapes have?"],
    "background": ["What color is the background?", "Which color is the image background?"],
}
DETAIL_TEMPLATES = [
    "What color is the checkered pattern on the small tag?",
    "Which color is the tiny tag checkered with?",
    "What is the color code of the small tag?",
    "Read the color of the small checkered label.",
]


@dataclass
class Sample:
    """One benchmark item: the image, a question, accepted answers, evidence boxes and kind."""

    id: str
    image: Image.Image
    question: str
    answers: list[str]
    evidence: list[Box]
    kind: str  # "global" (answerable at low resolution) or "detail" (needs full resolution)
    meta: dict[str, str] = field(default_factory=dict)


def corpus() -> list[str]:
    """Every question template and answer word, for training a tokenizer that covers the benchmark."""
    lines = [t for ts in GLOBAL_TEMPLATES.values() for t in ts] + DETAIL_TEMPLATES
    lines += [" ".join(COLORS), " ".join(BACKGROUNDS), " ".join(TAG_COLORS)]
    return lines


def draw_tag(draw: ImageDraw.ImageDraw, x: int, y: int, color: str) -> None:
    """A tag at (x, y): a 2-px black frame around an 8x6 px checkerboard of ``color`` and its complement."""
    ink = TAG_COLORS[color]
    complement = tuple(255 - v for v in ink)
    draw.rectangle((x, y, x + TAG_W - 1, y + TAG_H - 1), fill=(0, 0, 0))
    for i in range(TAG_W - 4):
        for j in range(TAG_H - 4):
            draw.point((x + 2 + i, y + 2 + j), fill=ink if (i + j) % 2 == 0 else complement)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Box, color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box.x0, box.y0, box.x1 - 1, box.y1 - 1
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=color)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=color)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=color)


def _free(box: Box, taken: list[Box], margin: int) -> bool:
    grown = Box(box.x0 - margin, box.y0 - margin, box.x1 + margin, box.y1 + margin)
    return all(grown.intersection(t) == 0 for t in taken)


def _tag_position(rng: random.Random, width: int, height: int, span_prob: float) -> tuple[int, int]:
    """A patch-aligned tag position; with ``span_prob`` the tag straddles a midline."""
    cols, rows = width // CELL, height // CELL
    if rng.random() < span_prob:
        if rng.random() < 0.5:  # straddle the vertical midline (tag in the patch left of it, shifted right)
            return width // 2 - 7, rng.randrange(1, rows - 1) * CELL
        return rng.randrange(1, cols - 1) * CELL, height // 2 - 7
    return rng.randrange(1, cols - 1) * CELL, rng.randrange(1, rows - 1) * CELL


def make_sample(
    seed: int, detail_fraction: float = 0.4, span_prob: float = 0.3, sample_id: str | None = None
) -> Sample:
    """Deterministically generate the sample of ``seed``."""
    rng = random.Random(seed)
    width, height = rng.choice(SIDES), rng.choice(SIDES)
    background = rng.choice(list(BACKGROUNDS))
    jitter = rng.randint(-6, 6)
    image = Image.new("RGB", (width, height), tuple(v + jitter for v in BACKGROUNDS[background]))
    draw = ImageDraw.Draw(image)

    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    taken: list[Box] = []
    for _ in range(rng.randint(1, 3)):
        for _ in range(50):
            side = int(min(width, height) * rng.uniform(0.2, 0.3))
            x, y = rng.randint(8, width - side - 8), rng.randint(8, height - side - 8)
            box = Box(x, y, x + side, y + side)
            if _free(box, taken, 12):
                taken.append(box)
                _draw_shape(draw, shape, box, COLORS[color])
                break

    code = rng.choice(list(TAG_COLORS))
    for _ in range(200):
        x, y = _tag_position(rng, width, height, span_prob)
        tag = Box(x, y, x + TAG_W, y + TAG_H)
        if _free(tag, taken, 4):
            break
    draw_tag(draw, tag.x0, tag.y0, code)

    sid = sample_id or f"syn-{seed}"
    if rng.random() < detail_fraction:
        return Sample(sid, image, rng.choice(DETAIL_TEMPLATES), [code], [tag], "detail", {"type": "code"})
    qtype = rng.choice(list(GLOBAL_TEMPLATES))
    question = rng.choice(GLOBAL_TEMPLATES[qtype])
    if qtype == "color":
        return Sample(sid, image, question, [color], taken, "global", {"type": qtype})
    return Sample(sid, image, question, [background], [Box(0, 0, width, height)], "global", {"type": qtype})


SPLIT_OFFSETS = {"train": 0, "val": 10_000_000, "test": 20_000_000}
VERSION = 3  # bump when the samples of a seed change: cached exports are keyed by it


def generate(split: str, n: int, detail_fraction: float = 0.4, span_prob: float = 0.3):
    """Yield the first ``n`` samples of a split; splits draw from disjoint seed ranges."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLIT_OFFSETS)}")
    for i in range(n):
        yield make_sample(SPLIT_OFFSETS[split] + i, detail_fraction, span_prob, sample_id=f"{split}-{i:06d}")

"""A seeded synthetic high-resolution VQA benchmark where the accuracy/resolution trade-off is real.

Every image holds one to three large shapes of one kind and colour (visible at any resolution) and
one red *plate* (84 px square, a colour reserved for it) whose centre holds a 20 px code patch: a
1-pixel checkerboard of a colour and its complement. At full resolution the checkerboard names the
code; every 2x2 block of it averages to the same grey, so at half resolution the plate and its grey
patch are plain to see (42 px, where it is) while its code is not (what it says). *Global* questions
ask about the shapes' colour or the background's; *detail* questions ask for the plate's code, and
their evidence box is the plate.

Plates are placed so that each of the nine crops ``0``-``8`` is the cheapest cover of the plate
for one ninth of the detail questions (quadrants; the centre for plates across a midline near the
middle; a half for plates across a midline near an edge). Image sides are multiples of 112 px from
224 to 896 (area at most 560 x 560, so aspect ratios run from 1:4 to 4:1; the held-out ``large`` and
``xlarge`` splits are larger, up to 1,344 px and 1.6 MP; ``train-all`` and ``val-all`` span all of it,
aspect ratios 1:4 to 4:1) and plates sit on the
28-px grid of merged tokens, so neither the full image, its half-resolution view nor any crop of the
set is resampled by the Qwen2-VL processor: what the model sees is exactly what was drawn.

Why this target (measured with ``experiments/quadrant_probe.py``, see docs/experiments/localisation.md): a
from-scratch tiny model with zero-mean patch filters learns which quadrant holds the plate from the
half-resolution view (94% in 500 steps), while earlier sessions found no way to make it find the
12x10 px tag of v3, which is grey at half resolution. Why a colour checkerboard and not printed
digits: the tiny model did not learn to read 3x5-pixel glyphs within its training budget, while it
learns colour codes quickly. Likewise the global questions read a colour off a large area
(POPE-style yes/no, shape kind and count stayed at chance within budget).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..crops import Box

# Shape colours; none is close to the plate's reserved red.
COLORS: dict[str, tuple[int, int, int]] = {
    "brown": (140, 86, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 200),
    "yellow": (230, 190, 20),
    "purple": (148, 83, 189),
    "orange": (245, 127, 14),
}
SHAPES = ("circle", "square", "triangle")
SIDES = tuple(range(224, 897, 112))  # halves and quarters of every side stay on the 28-px grid
MAX_AREA = 560 * 560  # at most 400 full-resolution tokens, as with the square sides of benchmark v3
SIZES = tuple((w, h) for w in SIDES for h in SIDES if w * h <= MAX_AREA)


# Held-out larger sizes, the same drawing on the processor's grid: ``large`` (0.31-0.45 MP, at most 576
# full-image tokens, sides up to 1,008 px) and ``xlarge`` (0.45-1.6 MP, up to the released processor's
# cap of 2,048 tokens, sides up to 1,344 px), aspect ratios up to 3:1.
def _sizes(sides: range, low: int, high: int, aspect: int = 3) -> tuple[tuple[int, int], ...]:
    return tuple((w, h) for w in sides for h in sides if low < w * h <= high and max(w, h) <= aspect * min(w, h))


TOKEN_PX = 28 * 28  # pixels of one merged visual token of the released (Qwen2.5-VL) processor
LARGE_SIZES = _sizes(range(448, 1009, 112), MAX_AREA, 576 * TOKEN_PX)
XLARGE_SIZES = _sizes(range(448, 1345, 112), 576 * TOKEN_PX, 2048 * TOKEN_PX)
# The processor's whole range, for training a policy that holds at every size (``train-all`` and
# ``val-all``): the test split's sizes, then 400-1,024 and 1,024-2,048 full-image tokens (its cap),
# aspect ratios 1:4 to 4:1, each of the three drawn for a third of the samples.
ALL_SIZES = (
    SIZES,
    _sizes(range(224, 2521, 112), MAX_AREA, 1024 * TOKEN_PX, aspect=4),
    _sizes(range(224, 2521, 112), 1024 * TOKEN_PX, 2048 * TOKEN_PX, aspect=4),
)
CELL = 28  # plates sit on the 28-px grid of merged tokens

# The detail target: a plate of a reserved colour that differs from every background in two RGB
# channels (one-channel differences, e.g. magenta or cyan plates, were not learnt by the probe),
# with the code as a checkerboard patch in its middle.
PLATE_COLOR = (255, 0, 0)
PLATE_SIDE = 84
PATCH_SIDE = 20
# Colours of the codes; each alternates with its complement (255 - c), so all average to grey.
CODE_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "orange": (255, 128, 0),
    "purple": (128, 0, 255),
    "pink": (255, 0, 128),
}

# Background tints: a global property with names of its own (none is a shape or code colour).
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
    "What color is the checkered code on the red plate?",
    "Which color is the red plate's code checkered with?",
    "What is the color code in the middle of the red plate?",
    "Read the color of the checkered patch on the plate.",
]
TARGETS = tuple("012345678")  # the crop that is the cheapest cover of the plate, drawn uniformly


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
    lines += [" ".join(COLORS), " ".join(BACKGROUNDS), " ".join(CODE_COLORS)]
    return lines


def draw_plate(image: Image.Image, x: int, y: int, code: str) -> Box:
    """The plate with its corner at (x, y) and the checkerboard of ``code`` in its middle; its box."""
    ImageDraw.Draw(image).rectangle((x, y, x + PLATE_SIDE - 1, y + PLATE_SIDE - 1), fill=PLATE_COLOR)
    ink = np.array(CODE_COLORS[code], np.uint8)
    rows, cols = np.mgrid[0:PATCH_SIDE, 0:PATCH_SIDE]
    board = np.where(((rows + cols) % 2 == 0)[..., None], ink, 255 - ink).astype(np.uint8)
    plate = Box(x, y, x + PLATE_SIDE, y + PLATE_SIDE)
    image.paste(Image.fromarray(board), code_box(plate).as_tuple()[:2])
    return plate


def code_box(plate: Box) -> Box:
    """The code patch in the middle of ``plate`` (at an even offset, so its 2x2 blocks are those of
    the half-resolution view): all a reader needs of the plate."""
    offset = (PLATE_SIDE - PATCH_SIDE) // 2
    return Box(plate.x0 + offset, plate.y0 + offset, plate.x0 + offset + PATCH_SIDE, plate.y0 + offset + PATCH_SIDE)


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


def _within(lo: int, hi: int) -> list[int]:
    """Grid positions of a plate lying inside ``[lo, hi)``."""
    return list(range(-(-lo // CELL) * CELL, hi - PLATE_SIDE + 1, CELL))


def _across(mid: int) -> list[int]:
    """Grid positions of a plate straddling ``mid`` (a multiple of 56)."""
    return list(range((mid - PLATE_SIDE) // CELL * CELL + CELL, mid, CELL))


def plate_position(rng: random.Random, width: int, height: int, target: str) -> tuple[int, int]:
    """A grid position where crop ``target`` is the cheapest cover of the plate (``TARGETS``)."""
    hw, hh, qw, qh = width // 2, height // 2, width // 4, height // 4
    if target in "0123":
        q = int(target)
        xs = _within(0, hw) if q % 2 == 0 else _within(hw, width)
        ys = _within(0, hh) if q < 2 else _within(hh, height)
    elif target == "4":  # across one midline (or both), inside the centre crop
        xs, ys = (_across(hw), _within(qh, 3 * qh)) if rng.random() < 0.5 else (_within(qw, 3 * qw), _across(hh))
    elif target in "56":  # across the vertical midline, too near the top (bottom) edge for the centre
        xs = _across(hw)
        ys = (
            [y for y in _within(0, hh) if y < qh]
            if target == "5"
            else [y for y in _within(hh, height) if y + PLATE_SIDE > 3 * qh]
        )
    else:  # "7", "8": across the horizontal midline, too near the left (right) edge for the centre
        ys = _across(hh)
        xs = (
            [x for x in _within(0, hw) if x < qw]
            if target == "7"
            else [x for x in _within(hw, width) if x + PLATE_SIDE > 3 * qw]
        )
    return rng.choice(xs), rng.choice(ys)


Sizes = tuple[tuple[int, int], ...]


def make_sample(
    seed: int, detail_fraction: float = 0.4, sample_id: str | None = None, sizes: Sizes | tuple[Sizes, ...] = SIZES
) -> Sample:
    """Deterministically generate the sample of ``seed``, its image size drawn from ``sizes`` (or from
    one of several groups of sizes, the group drawn first)."""
    rng = random.Random(seed)
    if isinstance(sizes[0][0], tuple):
        sizes = rng.choice(sizes)
    width, height = rng.choice(sizes)
    background = rng.choice(list(BACKGROUNDS))
    jitter = rng.randint(-6, 6)
    image = Image.new("RGB", (width, height), tuple(v + jitter for v in BACKGROUNDS[background]))
    draw = ImageDraw.Draw(image)

    target, code = rng.choice(TARGETS), rng.choice(list(CODE_COLORS))
    plate = draw_plate(image, *plate_position(rng, width, height, target), code)
    color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    shapes: list[Box] = []
    for _ in range(rng.randint(1, 3)):
        for _ in range(50):
            side = int(min(width, height) * rng.uniform(0.2, 0.3))
            x, y = rng.randint(8, width - side - 8), rng.randint(8, height - side - 8)
            box = Box(x, y, x + side, y + side)
            if _free(box, [plate, *shapes], 12):
                shapes.append(box)
                _draw_shape(draw, shape, box, COLORS[color])
                break

    sid = sample_id or f"syn-{seed}"
    if rng.random() < detail_fraction:
        meta = {"type": "code", "target": target}
        return Sample(sid, image, rng.choice(DETAIL_TEMPLATES), [code], [plate], "detail", meta)
    qtype = rng.choice(list(GLOBAL_TEMPLATES))
    question = rng.choice(GLOBAL_TEMPLATES[qtype])
    if qtype == "color" and shapes:
        return Sample(sid, image, question, [color], shapes, "global", {"type": qtype})
    question = rng.choice(GLOBAL_TEMPLATES["background"])
    return Sample(sid, image, question, [background], [Box(0, 0, width, height)], "global", {"type": "background"})


SPLIT_OFFSETS = {
    "train": 0,
    "val": 10_000_000,
    "test": 20_000_000,
    "large": 30_000_000,
    "xlarge": 40_000_000,
    "train-all": 50_000_000,
    "val-all": 60_000_000,
}
SPLIT_SIZES = {
    "train": SIZES,
    "val": SIZES,
    "test": SIZES,
    "large": LARGE_SIZES,
    "xlarge": XLARGE_SIZES,
    "train-all": ALL_SIZES,
    "val-all": ALL_SIZES,
}
VERSION = 4  # bump when the samples of a seed change: cached exports are keyed by it


def generate(split: str, n: int, detail_fraction: float = 0.4):
    """Yield the first ``n`` samples of a split; splits draw from disjoint seed ranges."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLIT_OFFSETS)}")
    for i in range(n):
        yield make_sample(SPLIT_OFFSETS[split] + i, detail_fraction, f"{split}-{i:06d}", SPLIT_SIZES[split])

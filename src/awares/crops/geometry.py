"""The discrete crop set of AwaRes and the low-resolution view, as pixel boxes on a W x H image."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

CROP_NAMES: dict[str, str] = {
    "0": "top-left",
    "1": "top-right",
    "2": "bottom-left",
    "3": "bottom-right",
    "4": "center",
    "5": "top",
    "6": "bottom",
    "7": "left",
    "8": "right",
}
ALL = "all"
CROP_IDS: tuple[str, ...] = (*CROP_NAMES, ALL)

# The reference implementation never returns a crop thinner than this; images smaller than it
# in a dimension get that whole dimension.
DEFAULT_MIN_CROP_SIDE = 100
# The smallest side of an image or a view: one 28-px token cell (14 px patches merged 2x2); the
# engine makes no view smaller than its processor's cell.
MIN_VIEW_SIDE = 28


@dataclass(frozen=True)
class Box:
    """An axis-aligned pixel box, half-open: columns x0..x1-1, rows y0..y1-1."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"empty box {self.as_tuple()}")

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    def intersection(self, other: Box) -> int:
        """Area shared with ``other`` (0 when disjoint)."""
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(w, 0) * max(h, 0)

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        return inter / (self.area + other.area - inter)

    def clip(self, width: int, height: int) -> Box:
        """This box restricted to a ``width`` x ``height`` image (raises if nothing is left)."""
        return Box(max(self.x0, 0), max(self.y0, 0), min(self.x1, width), min(self.y1, height))


def crop_box(crop_id: str, width: int, height: int, min_side: int = DEFAULT_MIN_CROP_SIDE) -> Box:
    """Pixel box of ``crop_id`` on a ``width`` x ``height`` image, as the reference code cuts it.

    A crop is ``cw = max(min_side, W // 2)`` wide and ``ch = max(min_side, H // 2)`` high; the far
    quadrants and halves are anchored at the far edge (``W - cw``), the centre starts at
    ``(W - cw) // 2``. An image with a side under ``min_side`` gives the whole image for any crop.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if crop_id not in CROP_IDS:
        raise KeyError(f"unknown crop id {crop_id!r}; valid ids are {list(CROP_IDS)}")
    if crop_id == ALL or width < min_side or height < min_side:
        return Box(0, 0, width, height)
    cw, ch = max(min_side, width // 2, 1), max(min_side, height // 2, 1)
    right, bottom = width - cw, height - ch
    return Box(
        *{
            "0": (0, 0, cw, ch),
            "1": (right, 0, width, ch),
            "2": (0, bottom, cw, height),
            "3": (right, bottom, width, height),
            "4": (right // 2, bottom // 2, (width + cw) // 2, (height + ch) // 2),
            "5": (0, 0, width, ch),
            "6": (0, bottom, width, height),
            "7": (0, 0, cw, height),
            "8": (right, 0, width, height),
        }[crop_id]
    )


def extract_crops(
    image: Image.Image, crop_ids: list[str] | tuple[str, ...], min_side: int = DEFAULT_MIN_CROP_SIDE
) -> list[Image.Image]:
    """The crops of the full-resolution ``image`` in the requested order, at native resolution."""
    return [image.crop(crop_box(cid, *image.size, min_side=min_side).as_tuple()) for cid in crop_ids]


def low_res_size(
    width: int,
    height: int,
    scale: float = 0.5,
    min_side: int = MIN_VIEW_SIDE,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
) -> tuple[int, int]:
    """Size of the low-resolution view: ``int(side * scale)`` as in the reference code, never below
    ``min_side`` nor above the original. With ``max_pixels`` (the processor's cap), the scale becomes
    ``scale * min(1, sqrt(max_pixels / (width * height)))``: the view is never more than ``scale`` per
    side of what the processor makes of the full image, so a low-res answer costs about ``scale**2``
    of the full image's tokens on any size (a 3000x4000 photo at plain 0.5x would still exceed the
    cap and cost as much as the full image). With ``min_pixels`` (the processor's floor), the view is
    never smaller than that area (nor than the image): the processor would enlarge a smaller view to
    it, costing the same tokens with less detail. With a floor of 65,536 px (some published
    processors') an image under 512 x 512 gets a view of 65,536 px or more, and one under 256 x 256
    is its own view."""
    if not 0 < scale <= 1:
        raise ValueError(f"low-res scale must be in (0, 1], got {scale}")
    if max_pixels:
        scale *= min(1.0, math.sqrt(max_pixels / (width * height)))
    floor = min(1.0, math.sqrt(min_pixels / (width * height))) if min_pixels else 0.0
    rounded = math.ceil if floor > scale else int  # at the floor, round up: never under it
    scale = max(scale, floor)

    def side(s: int) -> int:
        return min(s, max(rounded(s * scale), min_side))

    return side(width), side(height)


def low_res_view(
    image: Image.Image,
    scale: float = 0.5,
    min_side: int = MIN_VIEW_SIDE,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
) -> Image.Image:
    """The low-resolution global view (Lanczos), as in the reference implementation (see ``low_res_size``)."""
    size = low_res_size(*image.size, scale=scale, min_side=min_side, max_pixels=max_pixels, min_pixels=min_pixels)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)

"""Map evidence boxes to the cheapest subset of the crop set that covers them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .geometry import ALL, CROP_NAMES, DEFAULT_MIN_CROP_SIDE, Box, crop_box


@dataclass(frozen=True)
class CropSelection:
    """The chosen crops and the fraction of the evidence area they cover (``all`` covers 1.0)."""

    crop_ids: tuple[str, ...]
    coverage: float
    pixels: int


def _cells(boxes: Sequence[Box], crops: Sequence[Box]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the plane at every box edge; return cell areas, evidence membership and crop membership."""
    xs = np.unique([v for b in (*boxes, *crops) for v in (b.x0, b.x1)])
    ys = np.unique([v for b in (*boxes, *crops) for v in (b.y0, b.y1)])
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2
    area = np.outer(np.diff(ys), np.diff(xs)).ravel()
    gx, gy = np.meshgrid(cx, cy)
    gx, gy = gx.ravel(), gy.ravel()

    def inside(b: Box) -> np.ndarray:
        return (gx > b.x0) & (gx < b.x1) & (gy > b.y0) & (gy < b.y1)

    evidence = np.any([inside(b) for b in boxes], axis=0)
    membership = np.array([inside(c) for c in crops])
    return area, evidence, membership


def boxes_to_crops(
    boxes: Sequence[Box | tuple[int, int, int, int]],
    width: int,
    height: int,
    min_coverage: float = 1.0,
    min_side: int = DEFAULT_MIN_CROP_SIDE,
) -> CropSelection:
    """The cheapest subset of crops ``0``-``8`` covering ``min_coverage`` of the union of ``boxes``.

    Cost is the total number of crop pixels (what the crops add in visual tokens); ties go to fewer
    crops, then to lower crop ids. ``all`` is the fallback: it wins whenever no subset is cheaper.
    Boxes are pixel boxes on the full image and are clipped to it.
    """
    if not boxes:
        raise ValueError("at least one evidence box is needed")
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    evidence_boxes = [(b if isinstance(b, Box) else Box(*b)).clip(width, height) for b in boxes]
    ids = list(CROP_NAMES)
    crops = [crop_box(cid, width, height, min_side=min_side) for cid in ids]
    area, evidence, membership = _cells(evidence_boxes, crops)
    total = float(area[evidence].sum())

    best = ((width * height, 1, (len(ids),)), CropSelection((ALL,), 1.0, width * height))
    for n in range(1, len(ids) + 1):
        for subset in itertools.combinations(range(len(ids)), n):
            covered = membership[list(subset)].any(axis=0) & evidence
            coverage = float(area[covered].sum()) / total
            if coverage + 1e-9 < min_coverage:
                continue
            pixels = sum(crops[i].area for i in subset)
            key = (pixels, n, subset)
            if key < best[0]:
                best = (key, CropSelection(tuple(ids[i] for i in subset), coverage, pixels))
    return best[1]


def coverage(
    boxes: Sequence[Box | tuple[int, int, int, int]],
    crop_ids: Sequence[str],
    width: int,
    height: int,
    min_side: int = DEFAULT_MIN_CROP_SIDE,
) -> float:
    """The fraction of the union of ``boxes`` (clipped to the image) that the crops ``crop_ids`` cover."""
    evidence_boxes = [(b if isinstance(b, Box) else Box(*b)).clip(width, height) for b in boxes]
    if not evidence_boxes:
        raise ValueError("at least one evidence box is needed")
    crops = [crop_box(cid, width, height, min_side=min_side) for cid in crop_ids]
    if not crops:
        return 0.0
    area, evidence, membership = _cells(evidence_boxes, crops)
    return float(area[membership.any(axis=0) & evidence].sum() / area[evidence].sum())


# A call "hits" the evidence when its crops cover at least this share of the evidence area: the
# evaluation's ``evidence_hit_rate`` and GRPO's optional evidence term use the same rule.
HIT_COVERAGE = 0.9


def covers_evidence(
    boxes: Sequence[Box | tuple[int, int, int, int]],
    crop_ids: Sequence[str],
    width: int,
    height: int,
    min_side: int = DEFAULT_MIN_CROP_SIDE,
    threshold: float = HIT_COVERAGE,
) -> bool:
    """Whether the crops ``crop_ids`` cover at least ``threshold`` of the evidence ``boxes``."""
    return coverage(boxes, crop_ids, width, height, min_side) >= threshold


def iou_crops(
    box: Box, width: int, height: int, threshold: float = 0.5, min_side: int = DEFAULT_MIN_CROP_SIDE
) -> tuple[str, ...]:
    """The paper's rule: every crop whose IoU with ``box`` reaches ``threshold`` (may be empty)."""
    return tuple(cid for cid in CROP_NAMES if crop_box(cid, width, height, min_side=min_side).iou(box) >= threshold)

"""Crop set geometry, evidence-to-crop mapping and visual-token accounting."""

from .geometry import (
    ALL,
    CROP_IDS,
    CROP_NAMES,
    DEFAULT_MIN_CROP_SIDE,
    MIN_VIEW_SIDE,
    Box,
    crop_box,
    extract_crops,
    low_res_size,
    low_res_view,
)
from .mapping import HIT_COVERAGE, CropSelection, boxes_to_crops, coverage, covers_evidence, iou_crops
from .tokens import MAX_ASPECT_RATIO, VisionGrid

__all__ = [
    "ALL",
    "CROP_IDS",
    "CROP_NAMES",
    "DEFAULT_MIN_CROP_SIDE",
    "HIT_COVERAGE",
    "MAX_ASPECT_RATIO",
    "MIN_VIEW_SIDE",
    "Box",
    "CropSelection",
    "VisionGrid",
    "boxes_to_crops",
    "coverage",
    "covers_evidence",
    "crop_box",
    "extract_crops",
    "iou_crops",
    "low_res_size",
    "low_res_view",
]

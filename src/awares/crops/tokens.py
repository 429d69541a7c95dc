"""Exact visual-token accounting for the processors of every supported family (one resize rule)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# transformers' one resize rule: every supported family's processor uses Qwen2-VL's image processor.
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

# Qwen2-VL's smart_resize refuses images more elongated than this.
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class VisionGrid:
    """How a processor turns an image into visual tokens: smart-resize to multiples of
    ``patch_size * merge_size`` within ``[min_pixels, max_pixels]``, one token per merged cell."""

    min_pixels: int = 32 * 28 * 28
    max_pixels: int = 2048 * 28 * 28
    patch_size: int = 14
    merge_size: int = 2

    @classmethod
    def from_processor(cls, processor: Any) -> VisionGrid:
        """Read the grid settings of a transformers processor (or its image processor)."""
        ip = getattr(processor, "image_processor", processor)
        return cls(
            min_pixels=int(ip.size["shortest_edge"]),
            max_pixels=int(ip.size["longest_edge"]),
            patch_size=int(ip.patch_size),
            merge_size=int(ip.merge_size),
        )

    @property
    def cell(self) -> int:
        """Pixels per side of one visual token."""
        return self.patch_size * self.merge_size

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) the processor resizes a ``width`` x ``height`` image to."""
        if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
            raise ValueError(f"{width}x{height} is more elongated than {MAX_ASPECT_RATIO}:1")
        h, w = smart_resize(height, width, self.patch_size * self.merge_size, self.min_pixels, self.max_pixels)
        return w, h

    def tokens(self, width: int, height: int) -> int:
        """Visual tokens the language model sees for a ``width`` x ``height`` image."""
        w, h = self.resized(width, height)
        return (w // self.patch_size) * (h // self.patch_size) // self.merge_size**2

"""Load a Qwen2-VL-family processor from a local directory, with or without torchvision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoProcessor, AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available


class ImageOnlyQwenVLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` without its video processor.

    Why this exists: in transformers 5.23 the Qwen2.5-VL processor cannot be built without
    torchvision (its video processor requires it, and even ``video_processor=None`` fails the
    sub-processor class check), and torchvision has no wheel for the CPU torch used here. Images
    never touch the video processor, so this subclass declares only the image processor and the
    tokenizer; everything else (prompt expansion, ``image_grid_thw``, ``mm_token_type_ids``) is the
    library's own code. Where torchvision is installed, ``load_processor`` uses ``AutoProcessor``.
    """

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


def load_processor(path: str | Path) -> Qwen2_5_VLProcessor:
    """The processor saved in ``path`` (tokenizer, ``preprocessor_config.json``, chat template),
    padding on the left whatever its config says: batched generation appends after the prompt, so
    right padding would put pad tokens between a short prompt and its answer (a batch of 6 gave 5
    empty answers on the shipped base)."""
    path = Path(path)
    if is_torchvision_available():
        processor = AutoProcessor.from_pretrained(path)
        processor.tokenizer.padding_side = "left"
        return processor
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
    return ImageOnlyQwenVLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def save_processor(processor: Qwen2_5_VLProcessor, path: str | Path) -> None:
    """Save the parts a Qwen2.5-VL checkpoint ships, loadable by ``AutoProcessor`` where torchvision exists."""
    path = Path(path)
    processor.tokenizer.save_pretrained(path)
    processor.image_processor.processor_class = "Qwen2_5_VLProcessor"
    processor.image_processor.save_pretrained(path)

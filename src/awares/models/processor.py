"""Load a supported family's processor from a local directory, with or without torchvision."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from transformers import AutoProcessor, AutoTokenizer
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

from .families import Family, family_of


@functools.cache
def image_only_processor(family: Family) -> type:
    """The family's processor class without its video processor.

    Why this exists: in transformers 5.23 the Qwen-VL processors cannot be built without torchvision
    (their video processor requires it, and even ``video_processor=None`` fails the sub-processor
    class check), and torchvision has no wheel for the CPU torch used here. Images never touch the
    video processor, so this subclass declares only the image processor and the tokenizer;
    everything else (prompt expansion, ``image_grid_thw``, ``mm_token_type_ids``) is the library's
    own code. Where torchvision is installed, ``load_processor`` uses ``AutoProcessor``.
    """
    base = Family.cls(family.processor_class)

    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kw: Any
    ):
        for kind, default in [("image", "<|image_pad|>"), ("video", "<|video_pad|>")]:
            token = getattr(tokenizer, f"{kind}_token", None) or default
            setattr(self, f"{kind}_token", token)
            setattr(self, f"{kind}_token_id", tokenizer.convert_tokens_to_ids(token))
        for edge, default in [("start", "<|vision_start|>"), ("end", "<|vision_end|>")]:
            token = getattr(tokenizer, f"vision_{edge}_token", None) or default
            setattr(self, f"vision_{edge}_token", token)
            setattr(self, f"vision_{edge}_token_id", tokenizer.convert_tokens_to_ids(token))
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kw)

    return type(f"ImageOnly{base.__name__}", (base,), {"__init__": __init__, "__module__": __name__})


def model_type(path: Path) -> str | None:
    """The ``model_type`` of the checkpoint in ``path`` (None without a ``config.json``)."""
    config = path / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def load_processor(path: str | Path) -> Any:
    """The processor saved in ``path`` (tokenizer, ``preprocessor_config.json``, chat template), of
    the family its ``config.json`` names, padding on the left whatever its config says: batched
    generation appends after the prompt, so right padding would put pad tokens between a short
    prompt and its answer (a batch of 6 gave 5 empty answers on the shipped base)."""
    path = Path(path)
    family = family_of(model_type(path))
    if is_torchvision_available():
        processor = AutoProcessor.from_pretrained(path)
        processor.tokenizer.padding_side = "left"
        return processor
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    image_processor = Family.cls(family.image_processor_class).from_pretrained(path)
    return image_only_processor(family)(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def save_processor(processor: Any, path: str | Path) -> None:
    """Save the parts a checkpoint ships beside the model already saved in ``path`` (its family's
    processor class named), loadable by ``AutoProcessor`` where torchvision exists."""
    path = Path(path)
    family = family_of(model_type(path))
    processor.tokenizer.save_pretrained(path)
    processor.image_processor.processor_class = family.processor_class
    processor.image_processor.save_pretrained(path)

"""Model backends (HF transformers) and the offline tiny-model builder."""

from .default import default_base_dir, default_model_dir
from .hf import HFBackend, Session, Turn
from .processor import load_processor, save_processor
from .tiny import TinyConfig, build_tiny

__all__ = [
    "HFBackend",
    "Session",
    "TinyConfig",
    "Turn",
    "build_tiny",
    "default_base_dir",
    "default_model_dir",
    "load_processor",
    "save_processor",
]

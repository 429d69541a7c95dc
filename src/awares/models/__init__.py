"""Model backends behind one ``Backend`` protocol (HF transformers, OpenAI-compatible servers) and
the offline tiny-model builder."""

from .backend import GREEDY, Backend, Sampling, Turn
from .default import default_base_dir, default_model_dir
from .hf import HFBackend, Session, model_dir
from .openai_backend import OpenAIBackend
from .processor import load_processor, save_processor
from .tiny import TinyConfig, build_tiny

__all__ = [
    "GREEDY",
    "Backend",
    "HFBackend",
    "OpenAIBackend",
    "Sampling",
    "Session",
    "TinyConfig",
    "Turn",
    "build_tiny",
    "default_base_dir",
    "default_model_dir",
    "load_processor",
    "model_dir",
    "save_processor",
]

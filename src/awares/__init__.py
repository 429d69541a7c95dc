"""awares: resolution-aware VLM inference with high-resolution crops retrieved on demand."""

__version__ = "0.1.0"

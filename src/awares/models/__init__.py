"""Model backends (HF transformers) and the offline tiny-model builder."""

"""Training: the base VLM, cold-start SFT and multi-turn GRPO."""

"""GRPO's environment side: the curated prompts, ``num_generations`` protocol runs of each on the
runtime ``Engine`` (the same sampling, parser and crop execution as at inference), and their rewards."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import InputError
from ..images import load_image
from ..jsonl import rows
from ..protocol import Message
from ..runtime import Engine, Request, Result
from .config import GRPOConfig
from .rewards import CorrectnessReward, CropCostReward, EvidenceReward, FormatReward


@dataclass
class Rollout:
    """One sampled trajectory and what the rewards need to know about it."""

    messages: list[Message]
    result: Result
    crop_area: float


class PromptSet:
    """Curated trajectories used as prompts; ``sample`` draws a step's prompts deterministically."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"prompt file {path} does not exist")
        self.rows = [r for r in rows(path) if r.get("image") and r.get("question") and r.get("answers")]
        if not self.rows:
            raise InputError(f"no usable prompts (image, question, answers) in {path}")
        self.root = path.parent

    def sample(self, n: int, seed: int, balance: bool) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        pools = [[r for r in self.rows if r.get("label") == tag] for tag in ("crop", "direct")]
        if not balance or not all(pools):
            return rng.sample(self.rows, min(n, len(self.rows)))
        return [rng.choice(pools[i % 2]) for i in range(n)]

    def image(self, row: dict[str, Any]) -> Image.Image:
        path = Path(row["image"])
        return load_image(path if path.is_absolute() else self.root / path)


def rollout(engine: Engine, prompts: list[tuple[Image.Image, str]], num_generations: int) -> list[Rollout]:
    """``num_generations`` sampled protocol runs per prompt (consecutive), each with its final conversation."""
    requests = [Request(image, question) for image, question in prompts for _ in range(num_generations)]
    results = engine.answer_batch(requests, "crops")
    return [Rollout(r.messages, r, r.crop_pixels / (r.image_size[0] * r.image_size[1])) for r in results]


def call_rate(results: list[Result]) -> float | None:
    """Share of rollouts that called the tool (None when there are none): the collapse watch."""
    return sum(len(r.turns) > 1 for r in results) / len(results) if results else None


def score(rollouts: list[Rollout], prompts: list[dict[str, Any]], num_generations: int, config: GRPOConfig):
    """Per-function rewards and their sum for each rollout."""
    expand = [p for p in prompts for _ in range(num_generations)]
    columns = {
        "answers": [p["answers"] for p in expand],
        "question": [p["question"] for p in expand],
        "label": [p.get("label", "direct") for p in expand],
        "crops": [r.result.crops for r in rollouts],
        "crop_area": [r.crop_area for r in rollouts],
        "extra_tokens": [r.result.tokens.crops / r.result.tokens.full for r in rollouts],
        "parse_status": [r.result.parse_status for r in rollouts],
        "boxes": [p.get("boxes") for p in expand],
        "image_size": [r.result.image_size for r in rollouts],
    }
    functions = {
        "correct": CorrectnessReward(),
        "cost": CropCostReward(config.miss_penalty, config.call_cost, config.area_cost, config.cost_mode),
        "format": FormatReward(config.format_bonus),
    }
    if config.evidence_penalty:
        functions["evidence"] = EvidenceReward(config.evidence_penalty)
    completions = [r.result.answer for r in rollouts]
    parts = {name: torch.tensor(f(completions, **columns)) for name, f in functions.items()}
    return parts, sum(parts.values())

"""GRPO rewards as plain callables ``(completions, **kwargs) -> list[float]`` (TRL's convention).

``completions`` are the final answers of the rollouts. Keyword columns, one entry per completion:
``answers`` (accepted answers), ``question``, ``label`` (``direct``/``crop`` from curation),
``crops`` (crop ids requested, empty when the model answered directly), ``crop_area`` (fraction of
the image area the crops cover, summed), ``extra_tokens`` (crop visual tokens over full-image
tokens), ``parse_status`` (``answer``, ``call`` or ``malformed``), ``boxes`` (the oracle's evidence
boxes from curation, None for ``direct`` samples) and ``image_size``.
The AwaRes reward is ``correctness + cost + format``, with the cost negative; ``EvidenceReward`` is
an optional grounding term outside the paper's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..crops import DEFAULT_MIN_CROP_SIDE, HIT_COVERAGE, covers_evidence
from ..curate.judge import Judge, RuleJudge
from .config import CostMode


@dataclass
class CorrectnessReward:
    """1 when the judge accepts the final answer, else 0 (rule judge by default, any ``Judge`` works)."""

    judge: Judge = field(default_factory=RuleJudge)

    def __call__(self, completions: list[str], answers: list[list[str]], question: list[str], **_: Any) -> list[float]:
        return [float(self.judge(q, c, a)) for c, a, q in zip(completions, answers, question)]


@dataclass
class CropCostReward:
    """Minus the tool cost (the paper's C_tool).

    A sample labelled ``crop`` answered without crops pays ``miss_penalty``; a call pays
    ``call_cost`` plus, by ``mode``: ``area_cost`` x the requested fraction of the image area
    (the paper's 0.25 + 0.01 x area in percent is ``area_cost = 1``), ``area_cost`` x the number of
    crops (``per-crop``), or ``area_cost`` x the extra visual tokens over the full image's
    (``tokens``, i.e. added RTR).
    """

    miss_penalty: float = 2.0
    call_cost: float = 0.25
    area_cost: float = 1.0
    mode: CostMode = "area"

    def __call__(
        self,
        completions: list[str],
        label: list[str],
        crops: list[tuple[str, ...]],
        crop_area: list[float],
        extra_tokens: list[float],
        **_: Any,
    ) -> list[float]:
        rewards = []
        for tag, ids, area, tokens in zip(label, crops, crop_area, extra_tokens):
            if not ids:
                rewards.append(-self.miss_penalty if tag == "crop" else 0.0)
                continue
            size = {"area": area, "per-crop": float(len(ids)), "tokens": tokens}[self.mode]
            rewards.append(-(self.call_cost + self.area_cost * size))
        return rewards


@dataclass
class FormatReward:
    """``bonus`` for a well-formed turn 1 (an answer or a parsable call), ``-bonus`` for a malformed call."""

    bonus: float = 0.1

    def __call__(self, completions: list[str], parse_status: list[str], **_: Any) -> list[float]:
        return [-self.bonus if s == "malformed" else self.bonus for s in parse_status]


@dataclass
class EvidenceReward:
    """``-penalty`` for a call whose crops miss the oracle's evidence boxes (``covers_evidence``, the
    evaluation's ``evidence_hit_rate`` rule); 0 for answers and samples without boxes.

    Not in the paper: its cost alone prices a crop that clips the evidence like the evidence's own
    cover whenever the answer survives the clipping."""

    penalty: float = 0.5
    min_coverage: float = HIT_COVERAGE
    min_crop_side: int = DEFAULT_MIN_CROP_SIDE

    def __call__(
        self,
        completions: list[str],
        crops: list[tuple[str, ...]],
        boxes: list[list[tuple[int, int, int, int]] | None],
        image_size: list[tuple[int, int]],
        **_: Any,
    ) -> list[float]:
        side, share = self.min_crop_side, self.min_coverage
        return [
            -self.penalty if ids and found and not covers_evidence(found, ids, *size, side, share) else 0.0
            for ids, found, size in zip(crops, boxes, image_size)
        ]

"""Choosing which GRPO step to keep, on held-out data (``GRPOConfig.eval_data``).

Every saved step's policy answers the split greedily as the `crops` policy, scored as `awares eval`
scores it, into ``<output_dir>/eval/step-N.jsonl`` (one table for the run: ``eval/table.md``). The
best step has the highest accuracy; ties go to the lower RTR, then to the earlier step. GRPO on the
tiny policy drifts in its last steps with some seeds (docs/experiments/localisation.md): the step
chosen on val kept what the last step lost.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..data import load_records
from ..errors import InputError
from ..evaluate import evaluate
from ..models import HFBackend
from ..runtime import Engine, RuntimeConfig

STEP_PREFIX = "step-"


class StepScorer:
    """Scores a run's policy after a step on ``data``, into ``out`` (resuming, like `awares eval`)."""

    def __init__(self, data: str, out: Path, max_new_tokens: int, batch_size: int):
        self.records, errors = load_records(data, out)  # bad rows are left out and listed, as `awares eval` does
        if errors:
            print(f"eval_data: skipped {len(errors)} bad row(s); see {out / 'data.errors.jsonl'}", file=sys.stderr)
        if not self.records:
            raise InputError(f"eval_data {data!r} holds no usable record")
        self.out, self.batch_size = out, batch_size
        self.runtime = RuntimeConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)

    def __call__(self, model: Any, processor: Any, step: int) -> None:
        # A backend per call: HFBackend keeps the system turn's KV, which the last step's weights made.
        # A LoRA policy is scored as its base model with the adapter layers in it (PEFT injects them),
        # since the greedy decoder calls the base model's own modules.
        model = model.get_base_model() if hasattr(model, "get_base_model") else model
        engine = Engine(HFBackend(model, processor), self.runtime)
        evaluate({f"{STEP_PREFIX}{step}": ("crops", engine)}, self.records, self.out, self.batch_size)


def step_scores(out: Path, steps: set[int]) -> dict[int, dict[str, Any]]:
    """The overall scores in ``out/summary.json`` of each of ``steps`` that was scored."""
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    scores = {
        int(name.removeprefix(STEP_PREFIX)): s["all"] for name, s in summary.items() if name.startswith(STEP_PREFIX)
    }
    return {step: score for step, score in scores.items() if step in steps}


def best_step(scores: dict[int, dict[str, Any]]) -> int:
    """The step with the highest accuracy; ties: the lower RTR, then the earlier step."""
    if not scores:
        raise InputError("no saved step was scored on eval_data")
    return min(scores, key=lambda step: (-scores[step]["accuracy"], scores[step]["rtr"], step))

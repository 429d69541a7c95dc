"""GRPO runs side by side: the last step against the step chosen on val, on test, and which meet the targets.

    python experiments/grpo_seeds.py --run "1e-4 seed 0" runs/val-v12-e6-ckpt runs/test-v12-e6-ckpt \\
        --run "1e-4 seed 1" runs/val-seed1-ckpt runs/test-seed1-ckpt

Each ``--run LABEL VAL TEST`` names two folders of ``experiments/grpo_checkpoints.py`` (every
checkpoint of one GRPO run evaluated on val and on test). The val-chosen step is the checkpoint with
the highest val accuracy (ties: the lower val RTR, then the earlier step; `GRPOConfig.load_best_model_at_end`'s
rule, ``awares.train.select.best_step``); the SFT start is not a candidate. For the last
step and the chosen one, the table gives test accuracy / RTR / plate hit rate and whether they meet
issue 12's three targets on test (accuracy >= full resolution - 1, RTR <= 0.40, hit rate >= 0.90),
then the mean over runs. Reads results only; trains and evaluates nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean

from awares.train.select import best_step

TARGET_GAP, TARGET_RTR, TARGET_HIT = 1.0, 0.40, 0.90


def checkpoints(folder: Path) -> tuple[dict[int, dict], float]:
    """``{step: {"accuracy", "rtr", "hit"}}`` of every ``grpo_N`` in ``folder/summary.json``, and the
    accuracy of ``full``."""
    summary = json.loads((folder / "summary.json").read_text())
    steps = {
        int(name.removeprefix("grpo_")): {
            "accuracy": row["all"]["accuracy"],
            "rtr": row["all"]["rtr"],
            "hit": row["detail"]["evidence_hit_rate"],
        }
        for name, row in summary.items()
        if name.startswith("grpo_")
    }
    return steps, summary["full"]["all"]["accuracy"]


def meets(row: dict, full: float) -> bool:
    return row["accuracy"] >= full - TARGET_GAP and row["rtr"] <= TARGET_RTR and row["hit"] >= TARGET_HIT


def cell(row: dict, full: float) -> str:
    text = f"{row['accuracy']:.1f} / {row['rtr']:.3f} / {row['hit']:.2f}"
    return f"**{text}**" if meets(row, full) else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=3, action="append", required=True, metavar=("LABEL", "VAL", "TEST"))
    args = parser.parse_args()
    lines = [
        "| run | last step, test | val-chosen step | its val | its test |",
        "|---|---|---|---|---|",
    ]
    picked: dict[str, list[dict]] = {"last": [], "chosen": []}
    for label, val_dir, test_dir in args.run:
        val, _ = checkpoints(Path(val_dir))
        test, full = checkpoints(Path(test_dir))
        last = max(test)
        chosen = best_step(val)
        picked["last"].append({**test[last], "full": full})
        picked["chosen"].append({**test[chosen], "full": full})
        lines.append(
            f"| {label} | {cell(test[last], full)} | {chosen} | {val[chosen]['accuracy']:.1f} / "
            f"{val[chosen]['rtr']:.3f} / {val[chosen]['hit']:.2f} | {cell(test[chosen], full)} |"
        )
    for which, rows in picked.items():
        met = sum(meets(row, row["full"]) for row in rows)
        averages = {key: mean(row[key] for row in rows) for key in ("accuracy", "rtr", "hit", "full")}
        lines.append(
            f"\n{which}: mean test {averages['accuracy']:.1f} / {averages['rtr']:.3f} / {averages['hit']:.2f} "
            f"(full resolution {averages['full']:.1f}); all three targets met by {met} of {len(rows)} runs"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

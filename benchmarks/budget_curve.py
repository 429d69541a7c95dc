"""The accuracy-RTR curve a per-request visual-token budget traces: the shipped AwaRes policy with
``max_rtr`` from 0.25 to 1.0 (crops it cannot afford masked while its call is decoded), beside
full and low resolution on the same samples, in one run per set.

    python benchmarks/budget_curve.py --data synthetic:test synthetic:xlarge --out runs/bench/budget

Writes ``<out>/<set>/`` (``awares eval``'s files: one row per budget), ``<out>/budget.json`` and
the plot ``<out>/budget.png`` (docs/budget.png is a copy).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from awares.data import load_records  # noqa: E402
from awares.evaluate import evaluate  # noqa: E402
from awares.models import HFBackend, default_model_dir  # noqa: E402
from awares.runtime import Engine, RuntimeConfig  # noqa: E402

BUDGETS = (0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["synthetic:test", "synthetic:xlarge"])
    parser.add_argument("--model", default=str(default_model_dir("crops")))
    parser.add_argument("--baseline-model", default=str(default_model_dir("full")))
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    parser.add_argument("--out", default="runs/bench/budget")
    args = parser.parse_args()

    out = Path(args.out)
    policy, base = HFBackend.load(args.model), HFBackend.load(args.baseline_model)
    report: dict[str, dict[str, dict[str, float]]] = {}
    for spec in args.data:
        name = spec.replace(":", "-")
        records, _ = load_records(spec, out / name)
        runs = {"full": ("full", Engine(base, RuntimeConfig(max_new_tokens=16)))}
        runs["low"] = ("low", runs["full"][1])
        for budget in args.budgets:
            runs[f"budget-{budget:g}"] = ("crops", Engine(policy, RuntimeConfig(max_new_tokens=16, max_rtr=budget)))
        summaries, table = evaluate(runs, records, out / name)
        print(f"{spec} ({len(records)} samples):\n{table}")
        report[spec] = {run: _numbers(summaries[run]["all"], out / name / f"{run}.jsonl") for run in runs}
    (out / "budget.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "budget.png")


def _numbers(summary: dict[str, float], results: Path) -> dict[str, float]:
    """Accuracy, mean RTR and the largest RTR of any request (what a budget must bound)."""
    largest = max(json.loads(line)["rtr"] for line in results.read_text().splitlines())
    return {"n": summary["n"], "accuracy": summary["accuracy"], "rtr": summary["rtr"], "largest_rtr": largest}


def plot(report: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """Accuracy against mean RTR: one line per set through its budgets, full and low as markers."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for (spec, runs), color in zip(report.items(), ("tab:blue", "tab:orange", "tab:green")):
        curve = sorted((r["rtr"], r["accuracy"]) for name, r in runs.items() if name.startswith("budget-"))
        n = next(iter(runs.values()))["n"]
        axis.plot(*zip(*curve), "o-", color=color, label=f"AwaRes with max_rtr, {spec} (n={n})")
        for name, marker in (("full", "s"), ("low", "v")):
            axis.plot(runs[name]["rtr"], runs[name]["accuracy"], marker, color=color, label=f"{name}, {spec}")
    axis.set_xlabel("mean RTR (visual tokens / full image's)")
    axis.set_ylabel("accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

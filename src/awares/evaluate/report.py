"""Write an evaluation's summary as JSON, a markdown table and an accuracy-vs-RTR plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per policy: accuracy overall and per kind, ANLS, RTR, call rate, evidence hit rate of
    the calls per kind, crop pixels per call, parse failures, latency."""
    kinds = sorted({k for s in summaries.values() for k in s if k != "all"})
    head = [
        "policy",
        "n",
        "accuracy",
        *[f"acc {k}" for k in kinds],
        "ANLS",
        "RTR",
        "call rate",
        *[f"hit rate {k}" for k in kinds],
        "crop px/call",
        "parse fail",
        "median s/sample",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for policy, s in summaries.items():
        a = s["all"]
        cells = [policy, str(a["n"]), f"{a['accuracy']:.1f}"]
        cells += [f"{s[k]['accuracy']:.1f}" if k in s else "-" for k in kinds]
        cells += [
            f"{a['anls']:.1f}",
            f"{a['rtr']:.3f}",
            f"{a['call_rate']:.2f}",
            *[_number(s.get(k, {}).get("evidence_hit_rate"), ".2f") for k in kinds],
            _number(a.get("crop_pixels_per_call"), ",.0f"),
            str(a["parse_failures"]),
            f"{a['median_latency']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def pareto_plot(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """Accuracy against RTR, one point per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for policy, s in summaries.items():
        ax.scatter(s["all"]["rtr"], s["all"]["accuracy"], s=40)
        ax.annotate(policy, (s["all"]["rtr"], s["all"]["accuracy"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("retained visual-token ratio (RTR)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(0, max(1.05, max(s["all"]["rtr"] for s in summaries.values()) + 0.05))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(summaries: dict[str, dict[str, Any]], out_dir: Path) -> str:
    """Write ``summary.json``, ``table.md`` and ``pareto.png`` into ``out_dir``; return the table."""
    table = markdown_table(summaries)
    (out_dir / "summary.json").write_text(json.dumps(summaries, indent=2))
    (out_dir / "table.md").write_text(table)
    pareto_plot(summaries, out_dir / "pareto.png")
    return table


TABLE1_NAMES = {
    "chartqa": "ChartQA",
    "docvqa": "DocVQA",
    "ocrbench": "OCRBench",
    "pope": "POPE",
    "realworldqa": "RealWorldQA",
    "vstar": "V*",
}


def table1(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The paper's Table 1: per benchmark (``results[task][policy]`` summaries) the official metric
    and RTR of each policy, then their averages over the benchmarks the policy was run on."""
    tasks = [t for t in TABLE1_NAMES if t in results]
    policies = list(dict.fromkeys(p for t in tasks for p in results[t]))
    head = ["policy", *[f"{TABLE1_NAMES[t]} {c}" for t in tasks for c in ("acc", "RTR")], "avg acc", "avg RTR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for policy in policies:
        cells, accs, rtrs = [policy], [], []
        for task in tasks:
            summary = results[task].get(policy)
            if not summary:
                cells += ["-", "-"]
                continue
            acc = next(iter(summary["all"]["task_metrics"].values()))
            accs.append(acc)
            rtrs.append(summary["all"]["rtr"])
            cells += [f"{acc:.1f}", f"{rtrs[-1]:.3f}"]
        cells += [f"{sum(accs) / len(accs):.1f}", f"{sum(rtrs) / len(rtrs):.3f}"] if accs else ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

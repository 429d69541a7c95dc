"""Evaluation: metrics, the resumable per-policy harness and its report."""

from .harness import evaluate, evaluate_table1, oracle_crops, run_policy, summarize
from .metrics import anls, exact_match, normalize
from .report import markdown_table, table1, write_report
from .tasks import score, task_metrics

__all__ = [
    "anls",
    "evaluate",
    "evaluate_table1",
    "exact_match",
    "markdown_table",
    "normalize",
    "oracle_crops",
    "run_policy",
    "score",
    "summarize",
    "table1",
    "task_metrics",
    "write_report",
]

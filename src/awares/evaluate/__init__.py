"""Evaluation: metrics, the resumable per-policy harness and its report."""

from .harness import evaluate, oracle_crops, run_policy, summarize
from .metrics import anls, exact_match, normalize
from .report import markdown_table, write_report

__all__ = [
    "anls",
    "evaluate",
    "exact_match",
    "markdown_table",
    "normalize",
    "oracle_crops",
    "run_policy",
    "summarize",
    "write_report",
]

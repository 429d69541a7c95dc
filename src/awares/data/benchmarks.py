"""The six benchmarks of the paper's Table 1, read from their public Hugging Face copies.

Each loader turns a row of the copy lmms-eval uses (ChartQA, DocVQA, POPE, RealWorldQA, V* from
lmms-lab, OCRBench from echo840) into a record, with the question worded as lmms-eval words it for
the model (its default prompt suffix). The data may be a dataset saved with ``save_to_disk``, a
parquet file, or a folder of parquet files (a downloaded dataset repository).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .records import Record, RowError, load_hf

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = "\nAnswer with the option's letter from the given choices directly."


def _vstar_question(text: str) -> str:
    """V*'s "Q? (A) x (B) y" as lmms-eval words it: the question, then one "A. x" line per option."""
    options = re.findall(r"\([A-D]\)\s*([^()]+?)(?=\s*\([A-D]\)|$)", text)
    if options:
        lines = [f"{letter}. {option.strip()}" for letter, option in zip("ABCD", options)]
        text = "\n".join([text.split("(A)")[0].strip(), *lines])
    return text + LETTER_ANSWER


def _answers(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


# Per benchmark: the lmms-eval dataset and split, and a row's record fields (id, question, answers,
# kind); ``i`` is the row's index, the id where the copy has none.
ROW_TO_FIELDS: dict[str, tuple[str, Callable[[dict[str, Any], int], dict[str, Any]]]] = {
    "chartqa": (
        "lmms-lab/ChartQA (test)",
        lambda r, i: {
            "id": i,
            "question": r["question"] + SHORT_ANSWER,
            "answers": [r["answer"]],
            "kind": r.get("type"),
        },
    ),
    "docvqa": (
        "lmms-lab/DocVQA, config DocVQA (validation)",
        lambda r, i: {"id": r.get("questionId", i), "question": r["question"] + SHORT_ANSWER, "answers": r["answers"]},
    ),
    "ocrbench": (
        "echo840/OCRBench (test)",
        lambda r, i: {
            "id": i,
            "question": r["question"].strip(),
            "answers": _answers(r["answer"]),
            "kind": r["question_type"],
        },
    ),
    "pope": (
        "lmms-lab/POPE (test)",
        lambda r, i: {
            "id": r.get("question_id", i),
            "question": r["question"].strip() + SHORT_ANSWER,
            "answers": [r["answer"].strip().lower()],
            "kind": r.get("category"),
        },
    ),
    "realworldqa": (
        "lmms-lab/RealWorldQA (test)",
        lambda r, i: {"id": i, "question": r["question"].strip(), "answers": [r["answer"]]},
    ),
    "vstar": (
        "lmms-lab/vstar-bench (test)",
        lambda r, i: {
            "id": r.get("question_id", i),
            "question": _vstar_question(r["text"]),
            "answers": [r["label"].strip().upper()],
            "kind": r.get("category"),
        },
    ),
}
TASKS = tuple(ROW_TO_FIELDS)


def load_benchmark(task: str, path: str | Path, split: str | None = None) -> tuple[list[Record], list[RowError]]:
    """The records of ``task``'s copy at ``path``, and its bad rows (numbered from 1)."""
    if task not in ROW_TO_FIELDS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    _, fields = ROW_TO_FIELDS[task]

    def transform(row: dict[str, Any], index: int) -> dict[str, Any]:
        return {**fields(row, index), "image": row.get("image")}

    return load_hf(path, split=split, transform=transform)

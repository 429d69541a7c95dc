"""The six benchmarks of the paper's Table 1, read from their public Hugging Face copies.

Each loader turns a row of the copy lmms-eval uses (ChartQA, DocVQA, POPE, RealWorldQA, V* from
lmms-lab, OCRBench from echo840) into a record, with the question worded as lmms-eval words it for
the model (its default prompt suffix). The data is that copy on the hub (through the hub cache, with
the config and split lmms-eval uses), or a local one: a dataset saved with ``save_to_disk``, a
parquet file, or a folder of parquet files (a downloaded dataset repository).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..hub import resolve_dataset
from .records import Record, RowError, load_hf, records_of

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


@dataclass(frozen=True)
class HubCopy:
    """Where lmms-eval reads a benchmark: hub dataset, config and split."""

    repo_id: str
    split: str
    config: str | None = None


# Per benchmark: the lmms-eval dataset, and a row's record fields (id, question, answers, kind);
# ``i`` is the row's index, the id where the copy has none.
ROW_TO_FIELDS: dict[str, tuple[HubCopy, Callable[[dict[str, Any], int], dict[str, Any]]]] = {
    "chartqa": (
        HubCopy("lmms-lab/ChartQA", "test"),
        lambda r, i: {
            "id": i,
            "question": r["question"] + SHORT_ANSWER,
            "answers": [r["answer"]],
            "kind": r.get("type"),
        },
    ),
    "docvqa": (
        HubCopy("lmms-lab/DocVQA", "validation", "DocVQA"),
        lambda r, i: {"id": r.get("questionId", i), "question": r["question"] + SHORT_ANSWER, "answers": r["answers"]},
    ),
    "ocrbench": (
        HubCopy("echo840/OCRBench", "test"),
        lambda r, i: {
            "id": i,
            "question": r["question"].strip(),
            "answers": _answers(r["answer"]),
            "kind": r["question_type"],
        },
    ),
    "pope": (
        HubCopy("lmms-lab/POPE", "test"),
        lambda r, i: {
            "id": r.get("question_id", i),
            "question": r["question"].strip() + SHORT_ANSWER,
            "answers": [r["answer"].strip().lower()],
            "kind": r.get("category"),
        },
    ),
    "realworldqa": (
        HubCopy("lmms-lab/RealWorldQA", "test"),
        lambda r, i: {"id": i, "question": r["question"].strip(), "answers": [r["answer"]]},
    ),
    "vstar": (
        HubCopy("lmms-lab/vstar-bench", "test"),
        lambda r, i: {
            "id": r.get("question_id", i),
            "question": _vstar_question(r["text"]),
            "answers": [r["label"].strip().upper()],
            "kind": r.get("category"),
        },
    ),
}
TASKS = tuple(ROW_TO_FIELDS)


def load_benchmark(
    task: str, path: str | Path | None = None, split: str | None = None, revision: str | None = None
) -> tuple[list[Record], list[RowError]]:
    """The records of ``task``'s copy at ``path`` (default: lmms-eval's copy on the hub, at
    ``revision``, its images written under the awares cache), and its bad rows (numbered from 1)."""
    if task not in ROW_TO_FIELDS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    copy, fields = ROW_TO_FIELDS[task]

    def transform(row: dict[str, Any], index: int) -> dict[str, Any]:
        return {**fields(row, index), "image": row.get("image")}

    if path is not None:
        return load_hf(path, split=split, transform=transform)
    import datasets

    from ..models.default import cache_dir

    split = split or copy.split
    snapshot = resolve_dataset(copy.repo_id, split, copy.config, revision)
    try:
        dataset = datasets.load_dataset(str(snapshot), copy.config, split=split)
    except (ValueError, FileNotFoundError) as err:
        raise InputError(f"{copy.repo_id} (config {copy.config}, split {split}): {err}") from err
    folder = cache_dir() / "benchmarks" / f"{task}-{split}-{snapshot.name[:12]}"
    return records_of(dataset, folder, folder, transform=transform)

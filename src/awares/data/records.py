"""The dataset format: a JSONL file of records next to an image folder, and its loaders.

One line of ``data.jsonl``::

    {"id": "test-000001", "image": "images/test-000001.png", "question": "What is the code on the small tag?",
     "answers": ["47"], "evidence": [[490, 140, 503, 151]], "kind": "detail"}

``image`` is relative to the JSONL file's folder (or absolute); ``evidence`` holds pixel boxes
``[x0, y0, x1, y1]`` on the full image (may be empty); ``kind`` is ``global``, ``detail`` or absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..crops import Box
from ..errors import InputError
from ..jsonl import open_append

DATA_FILE = "data.jsonl"


@dataclass
class Record:
    """One question about one image, with accepted answers and evidence boxes."""

    id: str
    image: str
    question: str
    answers: list[str]
    evidence: list[tuple[int, int, int, int]] = field(default_factory=list)
    kind: str | None = None

    def evidence_boxes(self) -> list[Box]:
        return [Box(*b) for b in self.evidence]

    def to_json(self, root: Path) -> str:
        row = asdict(self)
        path = Path(self.image)
        row["image"] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        row["evidence"] = [list(b) for b in self.evidence]
        return json.dumps(row)


@dataclass
class RowError:
    """A JSONL row that could not be used, and why."""

    line: int
    reason: str


def parse_record(row: Any, root: Path) -> Record:
    """Validate one decoded JSON row; raise ``ValueError`` naming the problem."""
    if not isinstance(row, dict):
        raise ValueError("row is not a JSON object")
    missing = [k for k in ("id", "image", "question", "answers") if k not in row]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    answers = row["answers"]
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError("answers must be a non-empty list of strings")
    if not isinstance(row["question"], str) or not row["question"].strip():
        raise ValueError("question must be a non-empty string")
    evidence = row.get("evidence") or []
    try:
        boxes = [tuple(int(v) for v in b) for b in evidence]
        for b in boxes:
            Box(*b)
    except (TypeError, ValueError) as err:
        raise ValueError(f"evidence must be a list of [x0, y0, x1, y1] boxes ({err})") from err
    image = Path(row["image"])
    return Record(
        str(row["id"]),
        str(image if image.is_absolute() else root / image),
        row["question"],
        answers,
        boxes,
        row.get("kind"),
    )


def read_jsonl(path: str | Path) -> tuple[list[Record], list[RowError]]:
    """Read a dataset file; bad rows are reported in the returned errors and skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / DATA_FILE
    if not path.is_file():
        raise InputError(f"dataset file {path} does not exist")
    records, errors, seen = [], [], set()
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = parse_record(json.loads(line), path.parent)
            except (json.JSONDecodeError, ValueError) as err:
                errors.append(RowError(number, str(err)))
                continue
            if record.id in seen:
                errors.append(RowError(number, f"duplicate id {record.id!r}"))
                continue
            seen.add(record.id)
            records.append(record)
    return records, errors


def write_dataset(samples: Iterable[Any], out_dir: str | Path, total: int | None = None) -> Path:
    """Write synthetic ``Sample``s as PNGs plus ``data.jsonl``; resumes where a previous run stopped."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    data_file = out_dir / DATA_FILE
    done = {r.id for r in read_jsonl(data_file)[0]} if data_file.is_file() else set()
    with open_append(data_file) as out:
        for sample in tqdm(samples, total=total, desc=f"writing {out_dir.name}", unit="img"):
            if sample.id in done:
                continue
            image_path = out_dir / "images" / f"{sample.id}.png"
            sample.image.save(image_path)
            boxes = [b.as_tuple() for b in sample.evidence]
            record = Record(sample.id, str(image_path), sample.question, sample.answers, boxes, sample.kind)
            out.write(record.to_json(out_dir) + "\n")
            out.flush()
    return out_dir


def load_hf(path: str | Path, columns: dict[str, str] | None = None, split: str | None = None) -> list[Record]:
    """Records from a Hugging Face dataset saved with ``save_to_disk`` or from a parquet file.

    ``columns`` maps our field names (id, image, question, answers, evidence, kind) to the dataset's.
    Image columns holding decoded images are written next to the dataset, under ``awares-images/``.
    """
    import datasets

    path = Path(path)
    columns = {k: k for k in ("id", "image", "question", "answers", "evidence", "kind")} | (columns or {})
    if path.suffix == ".parquet":
        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    else:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split or next(iter(ds))]
    image_dir = (path.parent if path.is_file() else path) / "awares-images"
    records = []
    for i, row in enumerate(ds):
        image = row[columns["image"]]
        rid = str(row.get(columns["id"], i))
        if not isinstance(image, str):  # a decoded PIL image
            image_dir.mkdir(exist_ok=True)
            target = image_dir / f"{rid}.png"
            if not target.exists():
                image.save(target)
            image = str(target)
        mapped = {k: row.get(v) for k, v in columns.items() if v in row}
        mapped.update(id=rid, image=image)
        records.append(parse_record(mapped, path.parent))
    return records

"""The dataset format: a JSONL file of records next to an image folder, and its loaders.

One line of ``data.jsonl``::

    {"id": "test-000001", "image": "images/test-000001.png", "question": "What is the code on the small tag?",
     "answers": ["47"], "evidence": [[490, 140, 503, 151]], "kind": "detail"}

``image`` is relative to the JSONL file's folder (or absolute); ``evidence`` holds pixel boxes
``[x0, y0, x1, y1]`` on the full image (may be empty); ``kind`` is ``global``, ``detail`` or absent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..crops import Box
from ..errors import ImageInputError, InputError
from ..images import image_size
from ..jsonl import open_append
from ..paths import is_inside, plain_name

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


# A longer line is refused unread (a 54 MB question once took 13 GB of memory before it failed).
MAX_LINE_BYTES = 1 << 20
MAX_BOXES = 64
MAX_KIND_CHARS = 64


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, not {type(value).__name__} {str(value)[:40]!r}")
    return value


def _box(value: Any) -> tuple[int, int, int, int]:
    numbers = value if isinstance(value, list | tuple) and len(value) == 4 else None
    if numbers is None or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers
    ):
        raise ValueError(f"evidence boxes must be [x0, y0, x1, y1] of finite numbers, not {str(value)[:60]}")
    box = tuple(int(v) for v in numbers)
    if min(box) < 0 or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"evidence box {list(box)} is empty or has a negative coordinate")
    return box  # type: ignore[return-value]


def parse_record(row: Any, root: Path, allow_outside: bool = False) -> Record:
    """Validate one decoded JSON row (every field's type and range); raise ``ValueError`` naming the
    problem. The image must lie inside ``root``, the dataset's folder, unless ``allow_outside``."""
    if not isinstance(row, dict):
        raise ValueError("row is not a JSON object")
    missing = [k for k in ("id", "image", "question", "answers") if k not in row]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    rid = row["id"]
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise ValueError(f"id must be a string, not {type(rid).__name__}")
    try:
        rid = plain_name(str(rid), "id")
    except InputError as err:
        raise ValueError(str(err)) from err
    answers = [row["answers"]] if isinstance(row["answers"], str) else row["answers"]
    if not isinstance(answers, list) or not answers:
        raise ValueError("answers must be a non-empty list of strings")
    answers = [_text(a, "each answer") for a in answers]
    evidence = row.get("evidence") or []
    if not isinstance(evidence, list) or len(evidence) > MAX_BOXES:
        raise ValueError(f"evidence must be a list of at most {MAX_BOXES} boxes")
    kind = row.get("kind")
    if kind is not None and (not isinstance(kind, str) or len(kind) > MAX_KIND_CHARS):
        raise ValueError(f"kind must be a string of at most {MAX_KIND_CHARS} characters, or absent")
    image = root / _text(row["image"], "image")
    if not allow_outside and not is_inside(image, root):
        raise ValueError(
            f"image {row['image'][:80]!r} lies outside the dataset folder {root} (--allow-outside-images allows it)"
        )
    return Record(rid, str(image), _text(row["question"], "question"), answers, [_box(b) for b in evidence], kind)


def by_image_size(records: list[Record]) -> list[Record]:
    """``records`` from the smallest image to the largest (pixels, from each file's header; an
    unreadable one first, to fail on its own later), so that a batch of neighbours pads little:
    batches of a mixed-size set take about twice as long in random order (curation, evaluation)."""

    def pixels(record: Record) -> int:
        try:
            width, height = image_size(record.image)
        except ImageInputError:
            return 0
        return width * height

    return sorted(records, key=pixels)


def check_evidence(record: Record, size: tuple[int, int]) -> None:
    """Refuse a record whose evidence boxes do not lie inside its ``width x height`` image."""
    width, height = size
    for box in record.evidence:
        if box[2] > width or box[3] > height:
            raise InputError(f"evidence box {list(box)} of {record.id} lies outside its {width}x{height} image")


def _lines(path: Path, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines of ``path``; ``None`` for a line longer than ``limit`` bytes (skipped unread)."""
    with path.open("rb") as f:
        number = 0
        while line := f.readline(limit + 1):
            number += 1
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := f.readline(1 << 16)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
            else:
                yield number, line


def read_jsonl(
    path: str | Path, allow_outside: bool = False, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[list[Record], list[RowError]]:
    """Read a dataset file; bad rows are reported in the returned errors and skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / DATA_FILE
    if not path.is_file():
        raise InputError(f"dataset file {path} does not exist")
    records, errors, seen = [], [], set()
    for number, line in _lines(path, max_line_bytes):
        if line is None:
            errors.append(RowError(number, f"line longer than {max_line_bytes:,} bytes"))
            continue
        if not line.strip():
            continue
        try:
            record = parse_record(json.loads(line.decode("utf-8", errors="replace")), path.parent, allow_outside)
        except (json.JSONDecodeError, ValueError, RecursionError) as err:
            reason = "JSON nested too deeply" if isinstance(err, RecursionError) else str(err)
            errors.append(RowError(number, reason))
            continue
        if record.id in seen:
            errors.append(RowError(number, f"duplicate id {record.id!r}"))
            continue
        seen.add(record.id)
        records.append(record)
    return records, errors


def write_row_errors(errors: list[RowError], path: Path) -> None:
    """The dataset's bad rows as JSONL (``line``, ``reason``), replacing an earlier run's list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(e)) + "\n" for e in errors))


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


def _open_hf(path: Path, split: str | None) -> Any:
    """A dataset saved with ``save_to_disk``, a parquet file or a folder of parquet files."""
    import datasets

    files = [path] if path.suffix == ".parquet" else sorted(path.rglob("*.parquet")) if path.is_dir() else []
    if files and not (path / "dataset_info.json").exists() and not (path / "dataset_dict.json").exists():
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise InputError(f"{path} is neither a dataset saved with save_to_disk nor parquet files") from err
    return ds[split or next(iter(ds))] if isinstance(ds, datasets.DatasetDict) else ds


def load_hf(
    path: str | Path,
    columns: dict[str, str] | None = None,
    split: str | None = None,
    allow_outside: bool = False,
    transform: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
) -> tuple[list[Record], list[RowError]]:
    """Records and bad rows (numbered from 1) of a Hugging Face dataset saved with ``save_to_disk``,
    a parquet file or a folder of parquet files, each row validated as ``read_jsonl`` validates one.

    ``columns`` maps our field names (id, image, question, answers, evidence, kind) to the dataset's;
    ``transform(row, index)`` instead builds the fields from a row. Images stored in the dataset are
    written next to it, under ``awares-images/``, as ``<id>.png`` (ids must be plain names).
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    return records_of(_open_hf(path, split), folder, path.parent, columns, allow_outside, transform)


def records_of(
    dataset: Any,
    folder: Path,
    root: Path,
    columns: dict[str, str] | None = None,
    allow_outside: bool = False,
    transform: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
) -> tuple[list[Record], list[RowError]]:
    """Records and bad rows of a loaded Hugging Face dataset (see ``load_hf``); its images are written
    under ``folder/awares-images`` and named relative to ``root``."""
    columns = {k: k for k in ("id", "image", "question", "answers", "evidence", "kind")} | (columns or {})
    image_dir = folder / "awares-images"
    records, errors = [], []
    for i, row in enumerate(dataset):
        try:
            mapped = transform(row, i) if transform else {k: row.get(v) for k, v in columns.items() if v in row}
            mapped.setdefault("id", i)
            image = mapped.get("image")
            if image is not None and not isinstance(image, str):  # a decoded PIL image
                target = image_dir / f"{plain_name(str(mapped['id']), 'id')}.png"
                if not target.exists():
                    image_dir.mkdir(parents=True, exist_ok=True)
                    (image.convert("RGB") if image.mode == "CMYK" else image).save(target)  # PNG has no CMYK
                mapped["image"] = str(target.relative_to(root))
            records.append(parse_record(mapped, root, allow_outside))
        except (InputError, ValueError, OSError, KeyError, TypeError, AttributeError) as err:
            errors.append(RowError(i + 1, f"{type(err).__name__}: {err}" if isinstance(err, KeyError) else str(err)))
    return records, errors

"""Append-only JSONL logs that survive ``kill -9``: the resumable output of every long job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def rows(path: Path) -> Iterator[dict[str, Any]]:
    """The complete JSON objects of ``path``, in order; a line cut by an interruption is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row


def done_ids(path: Path) -> set[str]:
    """The ``id`` of every complete row of ``path``."""
    return {str(row["id"]) for row in rows(path) if "id" in row}


def open_append(path: Path) -> IO[str]:
    """Open ``path`` for appending, first cutting a trailing partial line left by a killed writer
    (appending after it would glue the next row onto the broken one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as raw:
            data = raw.read()
            if not data.endswith(b"\n"):
                raw.truncate(data.rfind(b"\n") + 1)
    return path.open("a", encoding="utf-8")


def append(out: IO[str], row: dict[str, Any]) -> None:
    """Write one row and flush it, so a later interruption cannot lose it."""
    out.write(json.dumps(row) + "\n")
    out.flush()

"""Append-only JSONL logs that survive ``kill -9``, and one writer at a time: the resumable output of
every long job."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import InputError


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
            raw.seek(-1, os.SEEK_END)  # the last byte tells; the whole file is read only to cut a line
            if raw.read(1) != b"\n":
                raw.seek(0)
                raw.truncate(raw.read().rfind(b"\n") + 1)
    return path.open("a", encoding="utf-8")


def append(out: IO[str], row: dict[str, Any]) -> None:
    """Write one row and flush it, so a later interruption cannot lose it."""
    out.write(json.dumps(row) + "\n")
    out.flush()


@contextmanager
def single_writer(lock: Path) -> Iterator[None]:
    """Hold the lock file ``lock`` (an OS lock, so a killed holder frees it; the file keeps the
    holder's pid) for the ``with`` block; if another live process holds it, an ``InputError`` names it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise InputError(
                f"{lock.parent} is being written by another run (pid {holder}, lock file {lock.name}); "
                "wait for it to finish or choose another output folder"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

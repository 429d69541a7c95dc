"""Resolve a dataset argument: a folder or JSONL file, or ``synthetic:SPLIT[:N]`` generated on demand."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .records import Record, RowError, read_jsonl, write_dataset
from .synthetic import SPLIT_OFFSETS, VERSION, generate

DEFAULT_SIZES = {"train": 4000, "val": 200, "test": 400, "large": 200, "xlarge": 200, "train-all": 4000, "val-all": 300}


def synthetic_dir(split: str, n: int, root: Path, detail_fraction: float = 0.4) -> Path:
    """Generate (or finish generating) the first ``n`` samples of ``split`` under ``root``."""
    out = root / f"{split}-{n}-d{detail_fraction:g}-v{VERSION}"
    return write_dataset(generate(split, n, detail_fraction), out, total=n)


def resolve(
    spec: str, cache: Path | None = None, allow_outside_images: bool = False
) -> tuple[list[Record], list[RowError]]:
    """Records and bad rows for ``spec``: ``synthetic:test``, ``synthetic:train:2000``, a folder or a
    file (whose image paths must stay inside its folder unless ``allow_outside_images``)."""
    if spec.startswith("synthetic:"):
        from ..models.default import cache_dir

        parts = spec.split(":")
        split = parts[1] if len(parts) > 1 else ""
        if split not in SPLIT_OFFSETS or len(parts) > 3:
            raise InputError(
                f"bad dataset {spec!r}; use synthetic:SPLIT[:N] with SPLIT one of {', '.join(SPLIT_OFFSETS)}"
            )
        try:
            n = int(parts[2]) if len(parts) == 3 else DEFAULT_SIZES[split]
        except ValueError as err:
            raise InputError(f"bad sample count in {spec!r}") from err
        if n < 1:
            raise InputError(f"bad sample count in {spec!r}: it must be at least 1")
        return read_jsonl(synthetic_dir(split, n, (cache or cache_dir()) / "synthetic"))
    path = Path(spec)
    if not path.exists():
        raise InputError(f"dataset {path} does not exist")
    return read_jsonl(path, allow_outside=allow_outside_images)


def load_records(
    spec: str | None,
    out: Path,
    task: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    allow_outside_images: bool = False,
) -> tuple[list[Record], list[RowError]]:
    """The first ``limit`` records of ``spec`` (``resolve``'s forms), or of Table-1 benchmark
    ``task`` (its local copy at ``spec``, or lmms-eval's copy on the hub when ``spec`` is None), and
    the bad rows, which are also listed in ``out/data.errors.jsonl``. Results written to ``out``
    may not share the dataset's own folder."""
    from .benchmarks import load_benchmark
    from .records import write_row_errors

    path = Path(spec) if spec else None
    if path and path.exists() and out.resolve() == (path if path.is_dir() else path.parent).resolve():
        raise InputError(f"--out {out} is the dataset's folder; give the results a folder of their own")
    if task:
        if path is not None and not path.exists():
            raise InputError(f"dataset {path} does not exist")
        records, errors = load_benchmark(task, path, split)
    else:
        records, errors = resolve(spec or "synthetic:test", allow_outside_images=allow_outside_images)
    write_row_errors(errors, out / "data.errors.jsonl")
    records = records[:limit] if limit else records
    if not records:
        raise InputError(f"no usable records in {spec or task}")
    return records, errors

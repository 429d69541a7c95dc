"""`awares curate`: base-model answers -> judge labels -> oracle boxes -> crops -> trajectories.

Each shard appends one row per record to ``shards/shard-I-of-N.jsonl`` (resumable: records already
there are skipped; a row cut by ``kill -9`` is redone) and bad records to a matching errors file.
``finalize`` merges whatever shards exist into ``trajectories.jsonl`` and ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from PIL import Image
from tqdm.auto import tqdm

from ..crops import boxes_to_crops, coverage, extract_crops
from ..data import Record, by_image_size
from ..data.records import check_evidence
from ..errors import AwaresError
from ..images import load_image
from ..jsonl import append, done_ids, open_append, rows, single_writer
from ..protocol import images_of
from ..runtime import Engine, Request, Result
from .judge import Judge, Label, label
from .oracle import Oracle
from .trajectories import ImageStore, trajectory

LABELS = get_args(Label)


@dataclass
class CurateConfig:
    """Where to write, which shard to run, and how trajectories are selected."""

    out_dir: str = "runs/curate"
    batch_size: int = 8
    min_coverage: float = 1.0  # fraction of the evidence the chosen crops must cover
    keep_unsolvable: bool = False  # keep samples neither view answered (as crop trajectories)
    direct_ratio: float | None = None  # at most this many `direct` trajectories per `crop` one
    shard: int = 0
    num_shards: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"shard {self.shard} is not in 0..{self.num_shards - 1}")


def shard_of(record_id: str, num_shards: int) -> int:
    """A record's shard, stable across runs and machines."""
    return zlib.crc32(record_id.encode()) % num_shards


def shard_files(out: Path, shard: int, num_shards: int) -> tuple[Path, Path]:
    name = f"shard-{shard:03d}-of-{num_shards:03d}"
    return out / "shards" / f"{name}.jsonl", out / "shards" / f"{name}.errors.jsonl"


def curate(records: list[Record], engine: Engine, judge: Judge, oracle: Oracle, config: CurateConfig) -> dict:
    """Curate this shard's records (skipping those already done), then merge all shards; the summary.
    One run writes a shard at a time; shards can run at once."""
    out = Path(config.out_dir)
    rows_file, errors_file = shard_files(out, config.shard, config.num_shards)
    mine = [r for r in records if shard_of(r.id, config.num_shards) == config.shard]
    done = done_ids(rows_file)
    todo = by_image_size([r for r in mine if r.id not in done])
    store = ImageStore(out)
    with (
        single_writer(rows_file.with_suffix(".lock")),
        open_append(rows_file) as results,
        open_append(errors_file) as errors,
        tqdm(total=len(mine), initial=len(mine) - len(todo), desc="curate", unit="sample") as bar,
    ):
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            for row in _curate_batch(batch, engine, judge, oracle, store, config):
                append(results if "label" in row else errors, row)
            bar.update(len(batch))
    return finalize(out, config)


def _curate_batch(
    batch: list[Record], engine: Engine, judge: Judge, oracle: Oracle, store: ImageStore, config: CurateConfig
):
    """A row for each record: its result, or an error row (``stage`` and ``error``)."""
    loaded: list[tuple[Record, Image.Image]] = []
    for record in batch:
        try:
            engine.check_question(record.question)
            image = load_image(record.image)
            check_evidence(record, image.size)
            loaded.append((record, image))
        except (AwaresError, OSError) as err:
            yield {"id": record.id, "stage": "input", "error": str(err)}
    if not loaded:
        return
    requests = [Request(image, record.question) for record, image in loaded]
    lows = engine.answer_batch(requests, "low")
    fulls = engine.answer_batch(requests, "full")
    for (record, image), low, full in zip(loaded, lows, fulls):
        try:
            yield _curate_one(
                record, image, low, full.answer, engine.config.min_crop_side, judge, oracle, store, config
            )
        except AwaresError as err:
            yield {"id": record.id, "stage": type(err).__name__, "error": str(err)}


def _curate_one(
    record: Record,
    image: Image.Image,
    low_run: Result,
    full: str,
    min_crop_side: int,
    judge: Judge,
    oracle: Oracle,
    store: ImageStore,
    config: CurateConfig,
) -> dict[str, Any]:
    low, view = low_run.answer, images_of(low_run.messages)[0]  # the engine's own low-res view
    tag = label(judge, record.question, record.answers, low, full)
    row: dict[str, Any] = {
        "id": record.id,
        "kind": record.kind,
        # relative to the trajectories file, as data.jsonl's are to theirs: GRPO reads it from there
        "image": os.path.relpath(Path(record.image).resolve(), store.root.resolve()),
        "question": record.question,
        "answers": record.answers,
        "low_answer": low,
        "full_answer": full,
        "label": tag,
    }
    answer = record.answers[0]
    if tag == "direct":
        return row | trajectory(store, view, record.question, answer)
    boxes = oracle(record, image, answer)
    selection = boxes_to_crops(boxes, *image.size, min_coverage=config.min_coverage, min_side=min_crop_side)
    row |= {"boxes": [b.as_tuple() for b in boxes], "crops": selection.crop_ids, "coverage": selection.coverage}
    if record.evidence:  # how much of the dataset's own evidence the crops hold (a check on the oracle)
        row["evidence_coverage"] = coverage(record.evidence_boxes(), selection.crop_ids, *image.size, min_crop_side)
    crops = extract_crops(image, list(selection.crop_ids), min_crop_side)
    return row | trajectory(store, view, record.question, answer, crops, selection.crop_ids)


def _kept(results: list[dict[str, Any]], config: CurateConfig) -> list[dict[str, Any]]:
    """The trajectories to train on: unsolvable ones by flag, `direct` ones capped by ``direct_ratio``
    (a deterministic choice: by hash of the id)."""
    kept = [r for r in results if r["label"] != "unsolvable" or config.keep_unsolvable]
    if config.direct_ratio is None:
        return kept
    direct = sorted((r for r in kept if r["label"] == "direct"), key=lambda r: zlib.crc32(r["id"].encode()))
    cap = math.ceil(config.direct_ratio * sum(r["label"] != "direct" for r in kept))
    chosen = {r["id"] for r in direct[:cap]}
    return [r for r in kept if r["label"] != "direct" or r["id"] in chosen]


def finalize(out: Path, config: CurateConfig) -> dict[str, Any]:
    """Merge every shard under ``out`` into ``trajectories.jsonl`` and ``summary.json`` (rewritten whole)."""
    results: dict[str, dict[str, Any]] = {}
    failed: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "shards").glob("shard-*.jsonl")):
        target = failed if path.name.endswith(".errors.jsonl") else results
        for row in rows(path):
            if isinstance(row.get("id"), str) and (target is failed or row.get("label") in LABELS):
                target[row["id"]] = row  # a row of a broken or older run is left out, never fatal
    failed = {i: e for i, e in failed.items() if i not in results}  # retried and done since
    ordered = [results[i] for i in sorted(results)]
    kept = _kept(ordered, config)
    fields = ("id", "label", "messages", "images", "crops", "boxes", "image", "question", "answers")
    _write_atomic(out / "trajectories.jsonl", "".join(json.dumps({k: r.get(k) for k in fields}) + "\n" for r in kept))
    summary = summarize(ordered, kept, list(failed.values()))
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


_COVERAGE_BINS = (("1.0", 1.0), ("0.9-1", 0.9), ("0.5-0.9", 0.5), ("<0.5", 0.0))


def histogram(values: list[float]) -> dict[str, int]:
    """Coverage values counted in the bins full, at least 0.9, at least 0.5, below."""
    counts = Counter(next(name for name, low in _COVERAGE_BINS if v >= low - 1e-9) for v in values)
    return {name: counts.get(name, 0) for name, _ in _COVERAGE_BINS}


def summarize(results: list[dict[str, Any]], kept: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict:
    """Counts per label, label by question kind; the kept calls' crops and coverage (what training
    sees); how much of the dataset's evidence the oracle's crops hold, over every row it boxed;
    errors by stage."""
    called = [r for r in kept if r.get("crops")]

    confusion: dict[str, Counter] = {}
    for r in results:
        confusion.setdefault(r["kind"] or "unknown", Counter())[r["label"]] += 1
    return {
        "samples": len(results),
        "labels": dict(Counter(r["label"] for r in results)),
        "kind_by_label": {k: dict(v) for k, v in sorted(confusion.items())},
        "trajectories": dict(Counter(r["label"] for r in kept)),
        "crop_ids": dict(sorted(Counter(c for r in called for c in r["crops"]).items())),
        "crops_per_call": dict(sorted(Counter(len(r["crops"]) for r in called).items())),
        "coverage": histogram([r["coverage"] for r in called]),
        "evidence_coverage": histogram([r["evidence_coverage"] for r in results if "evidence_coverage" in r]),
        "errors": len(failed),
        "errors_by_stage": dict(Counter(e.get("stage", "unknown") for e in failed)),
    }

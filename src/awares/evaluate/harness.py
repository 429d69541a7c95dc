"""Run policies on a dataset, one JSONL line per sample (resumable), and summarise them."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..crops import boxes_to_crops, coverage
from ..data import Record
from ..errors import AwaresError, InputError
from ..images import load_image
from ..jsonl import append, done_ids, open_append, rows
from ..runtime import Engine, Request, Result
from .metrics import anls, exact_match


def oracle_crops(record: Record, size: tuple[int, int]) -> tuple[str, ...]:
    """Ground-truth crops on an image of ``size``: the evidence mapped to the crop set, none for
    questions marked ``global``."""
    if record.kind == "global" or not record.evidence:
        return ()
    return boxes_to_crops(record.evidence_boxes(), *size).crop_ids


def evidence_hit(record: Record, result: Result, min_crop_side: int, threshold: float = 0.9) -> bool | None:
    """Whether the crops of a call cover at least ``threshold`` of the evidence area; None without
    a call or without evidence."""
    if not result.crops or not record.evidence:
        return None
    return coverage(record.evidence_boxes(), result.crops, *result.image_size, min_side=min_crop_side) >= threshold


def run_policy(engine: Engine, records: list[Record], policy: str, out_file: Path, batch_size: int = 8) -> None:
    """Append one result line per record to ``out_file``, skipping records already there, which
    must come from the same run (policy, model, runtime settings): see ``check_provenance``."""
    done = done_ids(out_file)
    check_provenance(out_file, {"policy": policy, **engine.describe()}, has_results=bool(done))
    todo = [r for r in records if r.id not in done]
    with (
        open_append(out_file) as out,
        tqdm(total=len(records), initial=len(records) - len(todo), desc=policy, unit="sample") as bar,
    ):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            began = time.perf_counter()
            batch, results = _answer(engine, batch, policy, out_file.with_suffix(".errors.jsonl"))
            per_sample = (time.perf_counter() - began) / max(len(batch), 1)
            for record, result in zip(batch, results):
                row = {
                    "id": record.id,
                    "kind": record.kind,
                    "answers": record.answers,
                    "correct": exact_match(result.answer, record.answers),
                    "anls": anls(result.answer, record.answers),
                    "evidence_hit": evidence_hit(record, result, engine.config.min_crop_side),
                    "latency": per_sample,
                    **result.to_dict(),
                }
                append(out, row)
            bar.update(len(batch))


def check_provenance(out_file: Path, run: dict[str, Any], has_results: bool) -> None:
    """Record ``run`` in ``<out_file>.run.json`` before the first result; refuse to add results of
    a different run (another model, retrained weights, other settings) when ``out_file`` already
    ``has_results``."""
    record = out_file.with_suffix(".run.json")
    try:
        known = json.loads(record.read_text()) if record.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        known = None  # an unreadable record proves nothing
    if known is None and not has_results:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(run, indent=2, default=str))
        return
    run = json.loads(json.dumps(run, default=str))  # compare as stored
    if known == run:
        return
    why = "no record of the run that made them" if known is None else _differences(known, run)
    raise InputError(
        f"{out_file} holds results of another run ({why}); give another output folder or name, "
        f"or delete {out_file.name} and {record.name} to start over"
    )


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    keys = sorted(set(old) | set(new))
    parts = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [p for p in [_differences(a, b, f"{prefix}{key}.")] if p]
        elif a != b:
            parts.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return "; ".join(parts)


def _request(record: Record, policy: str) -> Request:
    if policy != "oracle":
        return Request(record.image, record.question)
    image = load_image(record.image)  # decoded once: its size maps the evidence, the engine reuses it
    return Request(image, record.question, oracle_crops(record, image.size))


def _answer(engine: Engine, batch: list[Record], policy: str, errors: Path) -> tuple[list[Record], list[Result]]:
    """Answer a batch; if a record is bad, answer the others one by one and log the bad ones."""
    try:
        return batch, engine.answer_batch([_request(r, policy) for r in batch], policy)
    except (AwaresError, OSError):
        pass
    kept, results = [], []
    for record in batch:
        try:
            results.append(engine.answer_batch([_request(record, policy)], policy)[0])
            kept.append(record)
        except (AwaresError, OSError) as err:
            with open_append(errors) as log:
                append(log, {"id": record.id, "error": str(err)})
    return kept, results


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    calls = [r for r in rows if r["crops"]]
    hits = [r["evidence_hit"] for r in calls if r.get("evidence_hit") is not None]
    n = len(rows)
    return {
        "n": n,
        "accuracy": 100 * sum(r["correct"] for r in rows) / n,
        "anls": 100 * sum(r["anls"] for r in rows) / n,
        "rtr": sum(r["rtr"] for r in rows) / n,
        "call_rate": len(calls) / n,
        "crops_per_call": dict(sorted(Counter(len(r["crops"]) for r in calls).items())),
        "crop_ids": dict(sorted(Counter(c for r in calls for c in r["crops"]).items())),
        # Calls whose crops cover >= 90% of the evidence box, and the crop pixels a call costs.
        "evidence_hit_rate": sum(hits) / len(hits) if hits else None,
        "crop_pixels_per_call": sum(r.get("crop_pixels", 0) for r in calls) / len(calls) if calls else None,
        "parse_failures": sum(r["parse_status"] == "malformed" for r in rows),
        "median_latency": statistics.median(r["latency"] for r in rows),
        "mean_latency": sum(r["latency"] for r in rows) / n,
    }


def summarize(out_file: Path, ids: set[str] | None = None) -> dict[str, Any]:
    """Overall and per-kind statistics of one policy's result file (restricted to ``ids`` if given);
    empty when no result matches."""
    results = [r for r in rows(out_file) if ids is None or r["id"] in ids]
    if not results:
        return {}
    summary = {"all": _stats(results)}
    for kind in sorted({r["kind"] for r in results if r["kind"]}):
        summary[kind] = _stats([r for r in results if r["kind"] == kind])
    return summary

"""Run policies on a dataset, one JSONL line per sample (resumable), and summarise them."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..crops import boxes_to_crops, covers_evidence
from ..data import Record, by_image_size, load_records
from ..data.benchmarks import TASKS
from ..data.records import check_evidence
from ..errors import AwaresError, InputError
from ..images import load_image
from ..jsonl import append, done_ids, open_append, rows, single_writer
from ..paths import plain_name
from ..runtime import POLICY_TABLE, Engine, Request, Result
from ..runtime.isolation import run_isolated
from .metrics import anls, exact_match
from .report import table1, write_report
from .tasks import score, task_metrics

RUN_SUFFIX = ".run.json"  # beside each result file: the run that made it (see check_provenance)


def evaluate(
    runs: dict[str, tuple[str, Engine]],
    records: list[Record],
    out: Path,
    batch_size: int = 8,
    task: str | None = None,
) -> tuple[dict[str, dict[str, Any]], str]:
    """Run each named ``(policy, engine)`` on ``records`` into ``out/<name>.jsonl`` (resuming), then
    report every result file of ``out`` on these records (several models can share one table):
    ``summary.json``, ``table.md``, ``pareto.png``. ``task`` names a Table-1 benchmark whose
    official metric scores the answers (``awares.evaluate.tasks``); by default normalised exact
    match. One run writes to ``out`` at a time."""
    with single_writer(out / ".lock"):
        for name, (policy, engine) in runs.items():
            path = out / f"{plain_name(name, 'result name')}.jsonl"
            run_policy(engine, records, policy, path, batch_size, task)
        ids = {r.id for r in records}
        names = {p.name.removesuffix(RUN_SUFFIX) for p in out.glob(f"*{RUN_SUFFIX}")}
        order = {"full": 0, "low": 1, "oracle": 3}  # baselines around the policies
        ranked = sorted(names, key=lambda n: (order.get(n, 2), _natural(n)))
        summaries = {n: s for n in ranked if (s := summarize(out / f"{n}.jsonl", ids, task))}
        if not summaries:
            raise InputError(f"no record was answered; the reasons are in {out}/*.errors.jsonl")
        return summaries, write_report(summaries, out)


def _natural(name: str) -> list[str | int]:
    """A sort key that puts ``step-25`` before ``step-100``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def evaluate_table1(
    runs: dict[str, tuple[str, Engine]],
    out: Path,
    data_root: Path | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    split: str | None = None,
    say: Callable[[str], None] = print,
) -> str:
    """The paper's Table 1: ``evaluate`` on each of its six benchmarks (lmms-eval's copies on the hub,
    or the local copies in ``data_root/<task>``), results under ``out/<task>``; the table is written
    to ``out/table1.md`` and returned. Bad rows are counted through ``say``."""
    tasks = [t for t in TASKS if data_root is None or (data_root / t).exists()]
    if not tasks:
        raise InputError(f"no benchmark folder under {data_root}: any of {', '.join(TASKS)}")
    results = {}
    for task in tasks:
        folder = out / task
        spec = str(data_root / task) if data_root is not None else None
        records, errors = load_records(spec, folder, task=task, split=split, limit=limit)
        if errors:
            say(f"awares: skipped {len(errors)} bad row(s) of {task}; see {folder / 'data.errors.jsonl'}")
        results[task], table = evaluate(runs, records, folder, batch_size=batch_size, task=task)
        say(f"{task}:\n{table}")
    text = table1(results)
    (out / "table1.md").write_text(text)
    return text


def oracle_crops(record: Record, size: tuple[int, int]) -> tuple[str, ...]:
    """Ground-truth crops on an image of ``size``: the evidence mapped to the crop set, none for
    questions marked ``global``."""
    if record.kind == "global" or not record.evidence:
        return ()
    return boxes_to_crops(record.evidence_boxes(), *size).crop_ids


def evidence_hit(record: Record, result: Result, min_crop_side: int) -> bool | None:
    """Whether the crops of a call cover the evidence (``covers_evidence``); None without a call or
    without evidence."""
    if not result.crops or not record.evidence:
        return None
    return covers_evidence(record.evidence_boxes(), result.crops, *result.image_size, min_crop_side)


def run_policy(
    engine: Engine, records: list[Record], policy: str, out_file: Path, batch_size: int = 8, task: str | None = None
) -> None:
    """Append one result line per record to ``out_file``, skipping records already there, which
    must come from the same run (policy, task, model, runtime settings): see ``check_provenance``."""
    done = done_ids(out_file)
    run = {"policy": policy, **({"task": task} if task else {}), **engine.describe()}
    check_provenance(out_file, run, has_results=bool(done))
    todo = by_image_size([r for r in records if r.id not in done])
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
                    "correct": score(task, result.answer, record.answers, record.kind, record.question)
                    if task
                    else exact_match(result.answer, record.answers),
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
    record = out_file.with_suffix(RUN_SUFFIX)
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
    image = load_image(record.image)  # decoded once: its size checks the evidence, the engine reuses it
    check_evidence(record, image.size)
    given = oracle_crops(record, image.size) if POLICY_TABLE[policy].oracle_crops else ()
    return Request(image, record.question, given)


def _answer(engine: Engine, batch: list[Record], policy: str, errors: Path) -> tuple[list[Record], list[Result]]:
    """Answer a batch; if a record is bad, the others are answered as alone and the bad ones logged."""

    def answer(records: list[Record]) -> list[Result]:
        return engine.answer_batch([_request(r, policy) for r in records], policy, batch_size=len(records))

    kept, results = [], []
    for record, result in zip(batch, run_isolated(answer, batch, (AwaresError, OSError))):
        if isinstance(result, BaseException):
            with open_append(errors) as log:
                append(log, {"id": record.id, "error": str(result)})
        else:
            kept.append(record)
            results.append(result)
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


_ROW_TYPES = {
    "id": str,
    "correct": int | float,
    "anls": int | float,
    "rtr": int | float,
    "crops": list,
    "latency": int | float,
    "parse_status": str,
    "answer": str,
    "answers": list,
}


def _well_formed(row: dict[str, Any]) -> bool:
    """Whether a result row has every field ``_stats`` reads, of its type (a file written by an
    older or broken run can hold anything)."""
    kind = row.get("kind")
    return all(isinstance(row.get(k), t) for k, t in _ROW_TYPES.items()) and (kind is None or isinstance(kind, str))


def summarize(out_file: Path, ids: set[str] | None = None, task: str | None = None) -> dict[str, Any]:
    """Overall and per-kind statistics of one policy's result file (restricted to ``ids`` if given),
    each id counted once (its last row); rows that are not well-formed result rows are left out;
    with ``task``, the benchmark's own numbers under ``all.task_metrics``. Empty when no result matches."""
    latest = {r["id"]: r for r in rows(out_file) if _well_formed(r) and (ids is None or r["id"] in ids)}
    results = list(latest.values())
    if not results:
        return {}
    summary = {"all": _stats(results)}
    if task:
        summary["all"]["task_metrics"] = task_metrics(task, results)
    for kind in sorted({r["kind"] for r in results if r["kind"]}):
        summary[kind] = _stats([r for r in results if r["kind"] == kind])
    return summary

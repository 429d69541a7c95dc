"""Latency and accuracy per policy, per bucket of full-image tokens, as ratios measured in one run.

    python benchmarks/latency.py [--model DIR] [--baseline-model DIR] [--data synthetic:large:64]
                                 [--buckets 400,800,1200,1600] [--out runs/bench/latency.json]

``crops`` (AwaRes) runs on ``--model`` (default: the shipped policy), ``full`` and ``low`` on
``--baseline-model`` (default: the shipped base VLM). Every request runs alone (batch size 1), on an
image already decoded, after a warm-up request per model; the policies take turns on each sample so
that a change in machine load hits all of them alike. Each policy's exact-match accuracy is measured
on the same answers that were timed, so no speed-up hides a loss. For the tool calls it counts the
model's forward passes in turn 1 (prefill plus decoding steps), and times turn 2 again apart:
``extend`` (prefill only the new tokens on the turn-1 cache, encode only the crops) against
``generate`` on the whole two-turn conversation from scratch. Greedy decoding throughout; every
ratio is of sums (means) over the samples of its bucket.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import time
from pathlib import Path

import torch

from awares.crops import extract_crops, low_res_view
from awares.data import resolve
from awares.evaluate.metrics import exact_match
from awares.images import load_image
from awares.models import HFBackend, default_model_dir
from awares.protocol import SYSTEM_PROMPT, parse_response, turn1_messages, turn2_messages
from awares.runtime import Engine, RuntimeConfig

POLICIES = ("full", "low", "crops")


def timed(call, *args, **kwargs):
    start = time.perf_counter()
    out = call(*args, **kwargs)
    return out, time.perf_counter() - start


class PassCounter:
    """Counts the forward passes of ``backend``'s model in its latest ``generate`` call (turn 1)."""

    def __init__(self, backend: HFBackend):
        self.count = self.last = 0
        backend.model.register_forward_pre_hook(self._tick)
        generate = backend.generate

        def counted(*args, **kwargs):
            before = self.count
            turn = generate(*args, **kwargs)
            self.last = self.count - before
            return turn

        backend.generate = counted

    def _tick(self, *_):
        self.count += 1


def turn2_seconds(backend: HFBackend, image, question: str, max_new_tokens: int) -> tuple[float, float]:
    """Seconds of turn 2 on the turn-1 cache (``extend``) and from scratch (``generate`` on the whole
    two-turn conversation), for a request whose turn 1 calls the tool."""
    turn1 = turn1_messages(low_res_view(image), question, SYSTEM_PROMPT)
    first = backend.generate([turn1], max_new_tokens=max_new_tokens)
    call = parse_response(first.texts[0])
    conversation = turn2_messages(turn1, first.texts[0], extract_crops(image, call.crop_ids))
    _, reuse = timed(backend.extend, first.session, [0], [conversation], max_new_tokens=max_new_tokens)
    _, scratch = timed(backend.generate, [conversation], max_new_tokens=max_new_tokens)
    return reuse, scratch


def bucket_names(edges: list[int]) -> list[str]:
    bounds = [0, *edges]
    return [f"{lo + 1}-{hi}" for lo, hi in zip(bounds, bounds[1:])] + [f">{edges[-1]}"]


def summarize(rows: list[dict]) -> dict:
    mean = {p: statistics.fmean(r["seconds"][p] for r in rows) for p in POLICIES}
    calls = [r["turn1_passes"] for r in rows if r["turn1_passes"] is not None]
    turn2 = [r["turn2"] for r in rows if "turn2" in r]
    return {
        "samples": len(rows),
        "full_tokens": [min(r["full_tokens"] for r in rows), max(r["full_tokens"] for r in rows)],
        "mean_s": mean,
        "median_s": {p: statistics.median(r["seconds"][p] for r in rows) for p in POLICIES},
        "accuracy": {p: 100 * statistics.fmean(r["correct"][p] for r in rows) for p in POLICIES},
        "rtr_crops": statistics.fmean(r["rtr_crops"] for r in rows),
        "crops_over_full": mean["crops"] / mean["full"],
        "low_over_full": mean["low"] / mean["full"],
        "calls": len(calls),
        "turn1_passes_per_call": statistics.fmean(calls) if calls else None,
        "turn2_reuse_over_scratch": sum(a for a, _ in turn2) / sum(b for _, b in turn2) if turn2 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("crops")), help="the AwaRes policy")
    parser.add_argument("--baseline-model", default=str(default_model_dir("full")), help="for full and low")
    parser.add_argument("--data", default="synthetic:large:64")
    parser.add_argument("--buckets", default="400,800,1200,1600", help="upper edges of full-image token buckets")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--no-jump-forward", action="store_true", help="decode tool calls token by token")
    parser.add_argument("--out", default="runs/bench/latency.json")
    args = parser.parse_args()
    edges = [int(e) for e in args.buckets.split(",")]

    config = RuntimeConfig(max_new_tokens=args.max_new_tokens, batch_size=1)
    jump = not args.no_jump_forward
    backend = HFBackend.load(args.model, jump_forward=jump)
    passes = PassCounter(backend)
    engines = {"crops": Engine(backend, config)}
    engines["full"] = engines["low"] = Engine(HFBackend.load(args.baseline_model, jump_forward=jump), config)
    records, _ = resolve(args.data)
    images = {r.id: load_image(r.image) for r in records}

    rows = []
    with torch.inference_mode():
        for policy in POLICIES:  # warm-up
            engines[policy].answer(images[records[0].id], records[0].question, policy)
        for r in records:
            row = {"id": r.id, "seconds": {}, "correct": {}, "turn1_passes": None}
            for policy, engine in ((p, engines[p]) for p in POLICIES):
                result, row["seconds"][policy] = timed(engine.answer, images[r.id], r.question, policy)
                row["correct"][policy] = exact_match(result.answer, r.answers)
                if policy == "crops":
                    row["full_tokens"], row["rtr_crops"] = result.tokens.full, result.rtr
                    if result.parse_status == "call":
                        row["turn1_passes"] = passes.last
                        row["turn2"] = turn2_seconds(backend, images[r.id], r.question, args.max_new_tokens)
            rows.append(row)

    names = bucket_names(edges)
    buckets: dict[str, list[dict]] = {}
    for row in rows:
        buckets.setdefault(names[bisect.bisect_left(edges, row["full_tokens"])], []).append(row)
    result = {
        "model": args.model,
        "baseline_model": args.baseline_model,
        "data": args.data,
        "jump_forward": jump,
        "device": str(backend.device),
        "threads": torch.get_num_threads(),
        "all": summarize(rows),
        "buckets": {name: summarize(buckets[name]) for name in names if name in buckets},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "buckets"}, indent=2))
    for name, b in result["buckets"].items():
        print(
            f"{name:>10} n={b['samples']:3d}  crops/full {b['crops_over_full']:.2f}  low/full {b['low_over_full']:.2f}"
            f"  acc full {b['accuracy']['full']:.1f} low {b['accuracy']['low']:.1f} crops {b['accuracy']['crops']:.1f}"
            f"  rtr {b['rtr_crops']:.3f}  turn-2 reuse/scratch {b['turn2_reuse_over_scratch'] or float('nan'):.2f}"
        )


if __name__ == "__main__":
    main()

"""Latency per policy, and turn-2 time with and without KV-cache reuse, as ratios measured in one run.

    python benchmarks/latency.py [--model DIR] [--baseline-model DIR] [--data synthetic:test:64]
                                 [--out runs/bench/latency.json]

``crops`` (AwaRes) runs on ``--model`` (default: the shipped policy), ``full`` and ``low`` on
``--baseline-model`` (default: the shipped base VLM). Every request runs alone (batch size 1), after
a warm-up request per model, and the policies take turns on each sample so that a change in machine
load hits all of them alike. Turn 2 is timed wherever the policy calls the tool: ``extend`` (prefill
only the new tokens on the turn-1 cache, encode only the crops) against ``generate`` on the whole
two-turn conversation from scratch. Greedy decoding, so both produce the same answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from awares.crops import extract_crops, low_res_view
from awares.data import resolve
from awares.images import load_image
from awares.models import HFBackend, default_model_dir
from awares.protocol import SYSTEM_PROMPT, CropCall, parse_response, turn1_messages, turn2_messages
from awares.runtime import Engine, RuntimeConfig


def timed(call, *args, **kwargs):
    start = time.perf_counter()
    out = call(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("crops")), help="the AwaRes policy")
    parser.add_argument("--baseline-model", default=str(default_model_dir("full")), help="for full and low")
    parser.add_argument("--data", default="synthetic:test:64")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", default="runs/bench/latency.json")
    args = parser.parse_args()

    config = RuntimeConfig(max_new_tokens=args.max_new_tokens, batch_size=1)
    backend = HFBackend.load(args.model)
    engines = {"crops": Engine(backend, config)}
    engines["full"] = engines["low"] = Engine(HFBackend.load(args.baseline_model), config)
    records, _ = resolve(args.data)
    images = {r.id: load_image(r.image) for r in records}

    with torch.inference_mode():
        for policy in ("full", "crops"):  # warm-up
            engines[policy].answer(images[records[0].id], records[0].question, policy)
        seconds: dict[str, list[float]] = {policy: [] for policy in engines}
        for r in records:
            for policy, engine in engines.items():
                seconds[policy].append(timed(engine.answer, images[r.id], r.question, policy)[1])
        policies = {p: {"mean_s": statistics.fmean(s), "median_s": statistics.median(s)} for p, s in seconds.items()}

        reuse, scratch = [], []
        for record in records:
            image = images[record.id]
            turn1 = turn1_messages(low_res_view(image), record.question, SYSTEM_PROMPT)
            first = backend.generate([turn1], max_new_tokens=args.max_new_tokens)
            call = parse_response(first.texts[0])
            if not isinstance(call, CropCall):
                continue
            conversation = turn2_messages(turn1, first.texts[0], extract_crops(image, call.crop_ids))
            _, seconds = timed(backend.extend, first.session, [0], [conversation], max_new_tokens=args.max_new_tokens)
            reuse.append(seconds)
            scratch.append(timed(backend.generate, [conversation], max_new_tokens=args.max_new_tokens)[1])
        if not reuse:
            raise SystemExit(f"{args.model} never called the tool on {args.data}: no turn 2 to time")

    result = {
        "model": args.model,
        "baseline_model": args.baseline_model,
        "data": args.data,
        "samples": len(records),
        "device": str(backend.device),
        "threads": torch.get_num_threads(),
        "policies": policies,
        "latency_ratio_crops_over_full": policies["crops"]["mean_s"] / policies["full"]["mean_s"],
        "turn2": {
            "samples": len(reuse),
            "kv_reuse_mean_s": statistics.fmean(reuse),
            "from_scratch_mean_s": statistics.fmean(scratch),
            "ratio_reuse_over_scratch": statistics.fmean(reuse) / statistics.fmean(scratch),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

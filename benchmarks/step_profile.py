"""Where a base-training step's time goes: drawing views, collation, forward (vision tower), backward, optimizer.

    python benchmarks/step_profile.py --config configs/ground.toml --model src/awares/assets/base

Draws batches as the base trainer does (``ViewDataset`` of the config, after any curriculum), runs
``--steps`` AdamW steps on the model after ``--warmup`` untimed ones, and prints, as JSON, the mean
seconds of each part of a step, the mean FLOPs of their forward and backward passes (torch's
``FlopCounterMode``, matrix products and attention) and the rate they run at, beside the rate of
one large matrix product on the same machine: a step near that rate is compute-bound, so only fewer
tokens or fewer steps shorten a run.
``--compile`` also times the forward and backward passes of the same batches with the language model
under ``torch.compile`` (dynamic shapes), taking turns with the eager model batch by batch, and reports
the ratio; ``--bf16`` does the same with CPU autocast to bfloat16. One run on one machine: compare the
parts and ratios, not the seconds, across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForImageTextToText

from awares.models import load_processor
from awares.models.families import family_of
from awares.train.base import BaseTrainConfig, ViewDataset, training_records
from awares.train.collate import ChatCollator


def matmul_rate(dtype: torch.dtype = torch.float32, side: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of a ``side`` x ``side`` matrix product in ``dtype``: the machine's practical peak."""
    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * side**3 * repeats / (time.perf_counter() - started) / 1e9


def forward_backward_ratio(model: torch.nn.Module, batches: list[dict], warmup: int, variant: str) -> float:
    """Forward+backward seconds of a variant over those of the eager float32 model, on ``batches``
    taken in turns (the first ``warmup`` untimed: compilation). ``compile``: the language model under
    ``torch.compile`` (dynamic shapes); ``bf16``: the same model under CPU autocast to bfloat16, whose
    matrix products run on the avx512_bf16 units where the CPU has them."""
    candidate = model
    context = contextlib.nullcontext
    if variant == "compile":
        candidate = copy.deepcopy(model)
        candidate.model.language_model = torch.compile(candidate.model.language_model, dynamic=True)
    else:
        context = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    seconds = {"eager": 0.0, variant: 0.0}
    for index, inputs in enumerate(batches):
        for name, runner, runs_in in (("eager", model, contextlib.nullcontext), (variant, candidate, context)):
            started = time.perf_counter()
            with runs_in():
                loss = runner(**inputs).loss
            loss.backward()
            if index >= warmup:
                seconds[name] += time.perf_counter() - started
            runner.zero_grad()
    return seconds[variant] / seconds["eager"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ground.toml", help="a base-training TOML")
    parser.add_argument("--model", required=True, help="the checkpoint to train for the profile")
    parser.add_argument("--samples", type=int, default=2000, help="training samples to draw batches from")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, help="conversations per step (default: the config's)")
    parser.add_argument("--compile", action="store_true", help="also time the language model compiled")
    parser.add_argument("--bf16", action="store_true", help="also time the passes under bfloat16 autocast")
    args = parser.parse_args()
    config = BaseTrainConfig.from_toml(args.config)
    if args.batch_size:
        config = config.with_values({"batch_size": args.batch_size}, "--batch-size")
    processor = load_processor(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    collator = ChatCollator(processor, family_of(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = random.Random(args.seed)
    parts = dict.fromkeys(["views", "collate", "vision_forward", "forward", "backward", "optimizer"], 0.0)
    batches = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = ViewDataset(training_records(config, Path(tmp), args.samples), config)
        dataset.progress = 1.0
        for step in range(args.warmup + args.steps):
            timed = step >= args.warmup
            marks = [time.perf_counter()]
            batch = [dataset[rng.randrange(len(dataset))] for _ in range(config.batch_size)]
            marks.append(time.perf_counter())
            inputs = collator(batch)
            marks.append(time.perf_counter())
            with torch.no_grad():  # timed apart: the forward below runs the vision tower again
                model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
            marks.append(time.perf_counter())
            loss = model(**inputs).loss
            marks.append(time.perf_counter())
            loss.backward()
            marks.append(time.perf_counter())
            optimizer.step()
            optimizer.zero_grad()
            marks.append(time.perf_counter())
            if timed:
                for name, start, end in zip(parts, marks[:-1], marks[1:], strict=True):
                    parts[name] += end - start
                batches.append(inputs)
    counter = FlopCounterMode(display=False)  # the timed batches again, counted rather than timed
    with counter:
        for inputs in batches:
            model(**inputs).loss.backward()
    model.zero_grad()
    seconds = {name: total / args.steps for name, total in parts.items()}
    flops = counter.get_total_flops() / args.steps
    compute = seconds["forward"] + seconds["backward"]
    step = compute + seconds["views"] + seconds["collate"] + seconds["optimizer"]
    report = {
        "config": args.config,
        "model": args.model,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "seconds_per_step": step,
        "seconds": seconds,
        "forward_backward_share": compute / step,
        "positions_per_batch": sum(b["input_ids"].numel() for b in batches) / args.steps,
        "gflop_per_step": flops / 1e9,
        "gflop_per_second": flops / 1e9 / compute,
        "matmul_gflop_per_second": matmul_rate(),
        "batch_size": config.batch_size,
    }
    for variant in ("compile", "bf16"):
        if getattr(args, variant):
            report[f"{variant}_forward_backward_ratio"] = forward_backward_ratio(model, batches, args.warmup, variant)
    if args.bf16:
        report["bf16_matmul_gflop_per_second"] = matmul_rate(torch.bfloat16)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

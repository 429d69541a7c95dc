"""How much of a base-training step is padding, and what grouping batches by length would save.

    python benchmarks/batch_padding.py --config configs/ground.toml --model runs/pipeline/base/final

Draws ``--n`` training conversations as the base trainer does (``ViewDataset`` of the config, at
the end of its curriculum), batches them as the trainer does (random order, ``batch_size`` each) and
as a length-grouped sampler would (each pool of ``--pool`` conversations sorted by length, then cut
into batches), and times one forward and backward pass per batch (collation included) on the model.
Prints, as JSON, the share of padded positions and the seconds per step of each batching, and the
grouped/random ratio: one run, so compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText

from awares.models import load_processor
from awares.train.base import BaseTrainConfig, ViewDataset, training_records
from awares.train.collate import ChatCollator


def timed(model, collator: ChatCollator, batches: list[list]) -> dict[str, float]:
    """Seconds per forward+backward step (collation included) and the share of padded positions."""
    real = positions = 0
    started = time.perf_counter()
    for batch in batches:
        inputs = collator(batch)
        real += int(inputs["attention_mask"].sum())
        positions += inputs["attention_mask"].numel()
        model(**inputs).loss.backward()
        model.zero_grad()
    return {"seconds_per_step": (time.perf_counter() - started) / len(batches), "padding": 1 - real / positions}


def grouped(conversations: list[list], lengths: list[int], pool: int, batch_size: int) -> list[list]:
    """Batches cut from each ``pool`` of conversations sorted by length."""
    batches = []
    for start in range(0, len(conversations), pool):
        order = sorted(range(start, min(start + pool, len(conversations))), key=lambda i: lengths[i])
        batches += [[conversations[i] for i in order[j : j + batch_size]] for j in range(0, len(order), batch_size)]
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ground.toml", help="a base-training TOML")
    parser.add_argument("--model", required=True, help="the checkpoint to time the steps on")
    parser.add_argument("--n", type=int, default=256, help="conversations drawn")
    parser.add_argument("--pool", type=int, nargs="+", default=[32, 128], help="length-grouping pool sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = BaseTrainConfig.from_toml(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = ViewDataset(training_records(config, Path(tmp)), config)
        dataset.progress = 1.0  # the view mix after any curriculum
        rng = random.Random(args.seed)
        conversations = [dataset[rng.randrange(len(dataset))] for _ in range(args.n)]
    processor = load_processor(args.model)
    collator = ChatCollator(processor)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    lengths = [len(collator([c])["input_ids"][0]) for c in conversations]
    size = config.batch_size
    timed(model, collator, [conversations[:size]])  # warm-up
    report = {"config": args.config, "model": args.model, "n": args.n, "batch_size": size}
    report["random"] = timed(model, collator, [conversations[i : i + size] for i in range(0, args.n, size)])
    for pool in args.pool:
        result = timed(model, collator, grouped(conversations, lengths, pool, size))
        ratio = result["seconds_per_step"] / report["random"]["seconds_per_step"]
        report[f"grouped_{pool}"] = {**result, "ratio_to_random": ratio}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

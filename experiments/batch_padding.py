"""How much of a base-training step is padding, and what grouping batches by length would save.

    python experiments/batch_padding.py --config configs/ground.toml --model runs/pipeline/base/final

Draws ``--n`` training conversations as the base trainer does (``ViewDataset`` of the config, at
the end of its curriculum), in random batches of ``batch_size`` (``length_pool = 0``) and as the
trainer's ``PooledLengthSampler`` batches them (``length_pool = --pool``: each pool of drawn examples
sorted by the size of its views, then cut into batches), and times one forward and backward pass per
batch (collation included) on the model. Prints, as JSON, the share of padded positions and the
seconds per step of each batching, and the grouped/random ratio: one run, so compare the ratios,
not the seconds.
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
from awares.models.families import family_of
from awares.train.base import BaseTrainConfig, PooledLengthSampler, ViewDataset, training_records
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ground.toml", help="a base-training TOML")
    parser.add_argument("--model", required=True, help="the checkpoint to time the steps on")
    parser.add_argument("--n", type=int, default=256, help="conversations drawn")
    parser.add_argument("--pool", type=int, nargs="+", default=[32, 128], help="length-grouping pool sizes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = BaseTrainConfig.from_toml(args.config)
    size = config.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        records = random.Random(args.seed).sample(training_records(config, Path(tmp)), args.n)
        dataset = ViewDataset(records, config)
        dataset.progress = 1.0  # the view mix after any curriculum
        runs = {"random": [dataset[i] for i in range(args.n)]}
        for pool in args.pool:
            runs[f"grouped_{pool}"] = [dataset[d] for d in PooledLengthSampler(dataset, size, pool, args.seed)]
    processor = load_processor(args.model)
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    collator = ChatCollator(processor, family_of(model))
    timed(model, collator, [runs["random"][:size]])  # warm-up
    report = {"config": args.config, "model": args.model, "n": args.n, "batch_size": size}
    for name, conversations in runs.items():
        report[name] = timed(model, collator, [conversations[i : i + size] for i in range(0, args.n, size)])
        report[name]["ratio_to_random"] = report[name]["seconds_per_step"] / report["random"]["seconds_per_step"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

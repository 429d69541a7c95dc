"""Where one request's time goes, per policy: image work, chat template, processor, vision tower,
language model, and the rest (decoding loop, conversions), in milliseconds per request.

    python benchmarks/request_profile.py [--model DIR] [--baseline-model DIR] [--data synthetic:large:24]
                                         [--no-jump-forward] [--out runs/bench/request_profile.json]

Requests run alone (batch size 1) on decoded images, as in ``benchmarks/latency.py``; each part is
timed where it is called (wrapped functions, forward hooks on the vision tower and the language
model), parts nested in another are reported inside it, and ``other`` is what no part covers.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

import awares.runtime.engine
from awares.data import resolve
from awares.images import load_image
from awares.models import HFBackend, default_model_dir
from awares.runtime import Engine, RuntimeConfig

POLICIES = ("full", "low", "crops")
TOP_PARTS = (
    "image: load",
    "image: views",
    "image: crops",
    "chat template",
    "processor",
    "vision tower",
    "language model",
)


class Clock:
    """Accumulates wall time per part; a part entered inside itself is timed once."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.depth: dict[str, int] = defaultdict(int)
        self.began: dict[str, float] = {}

    def enter(self, part: str) -> None:
        self.depth[part] += 1
        if self.depth[part] == 1:
            self.began[part] = time.perf_counter()

    def leave(self, part: str) -> None:
        self.depth[part] -= 1
        if self.depth[part] == 0:
            self.seconds[part] += time.perf_counter() - self.began[part]

    def wrap(self, owner, name: str, part: str) -> None:
        function = getattr(owner, name)

        def timed(*args, **kwargs):
            self.enter(part)
            try:
                return function(*args, **kwargs)
            finally:
                self.leave(part)

        setattr(owner, name, timed)

    def hook(self, module: torch.nn.Module, part: str) -> None:
        module.register_forward_pre_hook(lambda *_: self.enter(part))
        module.register_forward_hook(lambda *_: self.leave(part))


def instrument(clock: Clock, backend: HFBackend) -> None:
    clock.wrap(backend, "_prompt", "chat template")
    clock.wrap(backend, "_encode", "processor")
    clock.wrap(backend.processor.image_processor, "preprocess", "processor: images")
    clock.hook(backend.model.model.visual, "vision tower")
    clock.hook(backend.model.model.language_model, "language model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("crops")))
    parser.add_argument("--baseline-model", default=str(default_model_dir("full")))
    parser.add_argument("--data", default="synthetic:large:24")
    parser.add_argument("--no-jump-forward", action="store_true")
    parser.add_argument("--out", default="runs/bench/request_profile.json")
    args = parser.parse_args()

    clock = Clock()
    for part, name in (
        ("image: views", "low_res_view"),
        ("image: crops", "extract_crops"),
        ("image: load", "load_image"),
    ):
        clock.wrap(awares.runtime.engine, name, part)
    config = RuntimeConfig(max_new_tokens=16, batch_size=1)
    jump = not args.no_jump_forward
    backends = {m: HFBackend.load(m, jump_forward=jump) for m in {args.model, args.baseline_model}}
    for backend in backends.values():
        instrument(clock, backend)
    engines = {p: Engine(backends[args.model if p == "crops" else args.baseline_model], config) for p in POLICIES}
    records, _ = resolve(args.data)
    images = [load_image(r.image) for r in records]

    report = {"data": args.data, "jump_forward": jump, "threads": torch.get_num_threads(), "ms_per_request": {}}
    with torch.inference_mode():
        for policy, engine in engines.items():
            engine.answer(images[0], records[0].question, policy)  # warm-up
            clock.seconds.clear()
            began = time.perf_counter()
            for image, record in zip(images, records):
                engine.answer(image, record.question, policy)
            total = time.perf_counter() - began
            parts = {k: 1000 * v / len(records) for k, v in sorted(clock.seconds.items())}
            parts["other"] = 1000 * total / len(records) - sum(parts.get(k, 0.0) for k in TOP_PARTS)
            report["ms_per_request"][policy] = {"total": 1000 * total / len(records), **parts}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

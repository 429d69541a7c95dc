"""Does a base VLM fail at reading the plate's code or at finding it? Detail questions of the test
split answered at full resolution on the whole image and on a zoom that holds only the plate (its
evidence box plus a margin of 28-px cells): a model that reads the zoom but not the whole image
reads, and fails to find.

    python experiments/reading_or_finding.py --model runs/qwen3.5/pipeline/base/final [--n 200]
"""

from __future__ import annotations

import argparse
import json

from awares.data.synthetic import generate
from awares.evaluate.metrics import exact_match
from awares.models import HFBackend
from awares.runtime import Engine, Request, RuntimeConfig

CELL = 28


def zoom(sample, margin_cells: int):
    """The sample's image cut to its evidence box grown by ``margin_cells`` cells a side."""
    x0, y0, x1, y1 = sample.evidence[0].as_tuple()
    m = margin_cells * CELL
    box = (max(0, x0 - m), max(0, y0 - m), min(sample.image.width, x1 + m), min(sample.image.height, y1 + m))
    return sample.image.crop(box)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=200, help="detail questions")
    parser.add_argument("--margin-cells", type=int, default=1)
    args = parser.parse_args()
    details = [s for s in generate("test", 4 * args.n) if s.kind == "detail"][: args.n]
    engine = Engine(HFBackend.load(args.model), RuntimeConfig(max_new_tokens=8))
    report = {"model": args.model, "n": len(details), "margin_cells": args.margin_cells}
    for view, images in (("whole image", [s.image for s in details]),
                         ("zoom on the plate", [zoom(s, args.margin_cells) for s in details])):  # fmt: skip
        results = engine.answer_batch([Request(im, s.question) for im, s in zip(images, details)], "full")
        report[view] = 100 * sum(exact_match(r.answer, s.answers) for r, s in zip(results, details)) / len(details)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

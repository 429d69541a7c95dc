"""The lowest RTR any policy can reach on a synthetic split at each plate hit rate, if it answers every question.

    python experiments/hit_rtr_frontier.py [--split test] [--n 400] [--model src/awares/assets/base]

No model runs: this is the crop arithmetic behind issue 12's two targets (RTR <= 0.40 and a plate
hit rate >= 0.90 on detail questions). A policy that answers a detail question must see the plate's
20 px code patch at full resolution, so it calls on every detail question and on no global one, and
each call takes either the cheapest cover of the whole plate (a hit) or the cheapest crops holding at
least 90% of the code patch (as ``code_patch_hits.py`` counts; a miss when they clip the plate). The
lowest RTR at a hit rate ``h`` spends the ``(1 - h)`` share of misses on the calls where the smaller
crops save the most tokens. ``--skip K`` also leaves the K dearest detail questions uncalled
(answered from the 0.5x view, so wrong but for a guess: the accuracy margin of the target), which
takes them out of the hit rate's calls. Tokens are counted as ``awares eval`` counts them, from the
processor's grid. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math

from PIL import Image

from awares.crops import HIT_COVERAGE, VisionGrid, boxes_to_crops, covers_evidence, extract_crops, low_res_view
from awares.data.synthetic import code_box, generate
from awares.models import default_base_dir, load_processor


def crop_tokens(grid: VisionGrid, image: Image.Image, crop_ids: tuple[str, ...]) -> int:
    """Visual tokens of the crops ``crop_ids`` of ``image``, as the runtime counts them."""
    return sum(grid.tokens(*crop.size) for crop in extract_crops(image, crop_ids))


def frontier_point(
    view: list[float], plate: list[float | None], code: list[float | None], hit_rate: float, skip: int
) -> float:
    """Mean RTR with every global question answered from the view, the ``skip`` detail questions
    dearest to cover answered from the view too, and the rest called: plate covers, except on as
    many calls as ``hit_rate`` allows, those that save the most with code-patch crops."""
    detail = [i for i, p in enumerate(plate) if p is not None]
    skipped = set(sorted(detail, key=lambda i: plate[i], reverse=True)[:skip])
    called = [i for i in detail if i not in skipped]
    misses = math.floor(round((1 - hit_rate) * len(called), 9))
    cheaper = set(sorted(called, key=lambda i: code[i] - plate[i])[:misses])
    total = 0.0
    for i, v in enumerate(view):
        crops = 0.0 if plate[i] is None or i in skipped else code[i] if i in cheaper else plate[i]
        total += v + crops
    return total / len(view)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--model", default=None, help="whose processor counts the tokens (default: the shipped base)")
    parser.add_argument("--skip", type=int, nargs="+", default=[0], help="detail questions left uncalled")
    parser.add_argument("--hit-rates", type=float, nargs="+", default=[1.0, 0.95, 0.9, 0.85, 0.8, 0.78])
    args = parser.parse_args()
    grid = VisionGrid.from_processor(load_processor(args.model or default_base_dir()))
    # Per sample, as shares of the full image's tokens; None: a global question (no call).
    view: list[float] = []
    plate: list[float | None] = []
    code: list[float | None] = []
    both = 0
    for sample in generate(args.split, args.n):
        image = sample.image
        full = grid.tokens(*image.size)
        view.append(grid.tokens(*low_res_view(image, max_pixels=grid.max_pixels).size) / full)
        if sample.kind != "detail":
            plate.append(None)
            code.append(None)
            continue
        (box,) = sample.evidence
        plate_ids = boxes_to_crops([box], *image.size).crop_ids
        code_ids = boxes_to_crops([code_box(box)], *image.size, min_coverage=HIT_COVERAGE).crop_ids
        both += covers_evidence([box], code_ids, *image.size)  # the code's crops already cover the plate
        plate_cost, code_cost = (crop_tokens(grid, image, ids) / full for ids in (plate_ids, code_ids))
        plate.append(plate_cost)
        code.append(min(code_cost, plate_cost))
    detail = sum(p is not None for p in plate)
    report = {
        "split": args.split,
        "n": args.n,
        "detail": detail,
        "code_crops_also_cover_plate": both,
        "saving_calls": sum(p is not None and c < p for p, c in zip(plate, code, strict=True)),
        "min_rtr": {
            f"skip_{k}": {f"{h:g}": round(frontier_point(view, plate, code, h, k), 4) for h in args.hit_rates}
            for k in args.skip
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""How often a policy's calls on synthetic detail questions cover the plate's code patch, and its accuracy then.

    python experiments/code_patch_hits.py runs/pipeline/eval/awares.jsonl [--split test]

The evidence box of a v4 detail question is the whole 84 px plate (``evidence_hit_rate`` in the
evaluation); the answer needs only the 20 px checkerboard in its middle. This counts calls whose
crops cover at least 90% of that patch, and how many of those were answered correctly; and the calls
whose crops differ from the plate's cheapest cover (the oracle mapping), as ``oracle -> requested``.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from awares.crops import boxes_to_crops, covers_evidence
from awares.data.synthetic import SPLIT_OFFSETS, code_box, make_sample
from awares.jsonl import rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a <policy>.jsonl written by `awares eval` on synthetic:SPLIT")
    parser.add_argument("--split", default="test", choices=list(SPLIT_OFFSETS))
    args = parser.parse_args()
    calls = hits = correct = correct_hits = 0
    unlike_oracle: Counter[str] = Counter()
    for row in rows(args.results):
        if row.get("kind") != "detail" or not row.get("crops"):
            continue
        index = int(row["id"].rsplit("-", 1)[1])
        (plate,) = make_sample(SPLIT_OFFSETS[args.split] + index).evidence
        hit = covers_evidence([code_box(plate)], row["crops"], *row["image_size"])
        calls, hits = calls + 1, hits + hit
        oracle = boxes_to_crops([plate], *row["image_size"]).crop_ids
        if tuple(row["crops"]) != oracle:
            unlike_oracle[f"{','.join(oracle)} -> {','.join(row['crops'])}"] += 1
        correct, correct_hits = correct + row["correct"], correct_hits + (row["correct"] and hit)
    print(
        json.dumps(
            {
                "detail_calls": calls,
                "code_patch_hit_rate": hits / calls if calls else None,
                "accuracy": correct / calls if calls else None,
                "accuracy_when_hit": correct_hits / hits if hits else None,
                "calls_unlike_oracle": sum(unlike_oracle.values()),
                "unlike_oracle": dict(unlike_oracle.most_common()),
            }
        )
    )


if __name__ == "__main__":
    main()

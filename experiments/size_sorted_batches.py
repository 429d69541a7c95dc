"""How much sorting a mixed-size set by image size saves batched answering (curation, evaluation).

    python experiments/size_sorted_batches.py --model runs/all-sizes/pipeline-own-base/base/final \
        --data synthetic:val-all:64

Answers the same records with ``--policy`` in batches of ``--batch-size``, first in the data's order,
then in ``by_image_size`` order (what ``awares curate`` and ``awares eval`` do), and prints as JSON
the seconds of each, their ratio, the visual-token padding of each order's batches, and how many
answers the two orders agree on (padding changes the arithmetic slightly, not the answers).
One run on a shared machine: compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import time

from awares.crops import low_res_size
from awares.data import by_image_size, resolve
from awares.images import image_size, load_image
from awares.models import HFBackend
from awares.runtime import Engine, Request, RuntimeConfig


def padding(records: list, batch_size: int, policy: str) -> float:
    """The share of the batches' image pixels that are padding (each batch padded to its largest view)."""
    sizes = [image_size(r.image) for r in records]
    pixels = [w * h for w, h in (low_res_size(*s) if policy == "low" else s for s in sizes)]
    batches = [pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
    return 1 - sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="synthetic:val-all:64")
    parser.add_argument("--policy", default="full")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    records, _ = resolve(args.data)
    engine = Engine(HFBackend.load(args.model), RuntimeConfig(batch_size=args.batch_size, max_new_tokens=16))
    engine.answer_batch([Request(load_image(records[0].image), records[0].question)], args.policy)  # warm-up
    report, answers = {"data": args.data, "policy": args.policy, "batch_size": args.batch_size}, {}
    for name, ordered in [("data_order", records), ("by_image_size", by_image_size(records))]:
        requests = [Request(load_image(r.image), r.question) for r in ordered]
        began = time.perf_counter()
        results = engine.answer_batch(requests, args.policy)
        report[name] = {
            "seconds": time.perf_counter() - began,
            "padding": padding(ordered, args.batch_size, args.policy),
        }
        answers[name] = {r.id: result.answer for r, result in zip(ordered, results)}
    report["ratio"] = report["by_image_size"]["seconds"] / report["data_order"]["seconds"]
    report["same_answers"] = sum(answers["data_order"][i] == answers["by_image_size"][i] for i in answers["data_order"])
    report["n"] = len(records)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

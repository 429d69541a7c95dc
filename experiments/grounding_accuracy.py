"""Does a base model ground? Its answer to "Which crop holds the red plate?" on the 0.5x view.

    python experiments/grounding_accuracy.py --model runs/pipeline/base/final [--n 200]

Asks the base training's grounding question (``awares.train.base.GROUND_QUESTION``) about the
half-resolution view of ``--n`` held-out detail images of the synthetic test split and compares the
answer with the crop that is the plate's cheapest cover (chance: 1/9). Prints the accuracy overall,
per target crop, and left/right and top/bottom agreement on quadrant plates, as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from awares.data.synthetic import generate
from awares.models import HFBackend
from awares.runtime import Engine, Request, RuntimeConfig
from awares.train.base import GROUND_QUESTION


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a base model trained with `ground` > 0")
    parser.add_argument("--n", type=int, default=200, help="held-out detail images")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    samples = list(generate("test", args.n, detail_fraction=1.0))
    engine = Engine(HFBackend.load(args.model), RuntimeConfig(batch_size=args.batch_size, max_new_tokens=4))
    results = engine.answer_batch([Request(s.image, GROUND_QUESTION) for s in samples], policy="low")
    pairs = [(r.answer.strip(), s.meta["target"]) for r, s in zip(results, samples)]
    quads = [(int(a), int(t)) for a, t in pairs if a in {"0", "1", "2", "3"} and t in "0123"]
    per_target = Counter(t for _, t in pairs)
    right = Counter(t for a, t in pairs if a == t)
    print(
        json.dumps(
            {
                "model": args.model,
                "n": len(pairs),
                "accuracy": sum(a == t for a, t in pairs) / len(pairs),
                "per_target": {t: f"{right[t]}/{per_target[t]}" for t in sorted(per_target)},
                "answers": dict(sorted(Counter(a for a, _ in pairs).items())),
                "left_right_on_quadrants": sum(a % 2 == t % 2 for a, t in quads) / max(len(quads), 1),
                "top_bottom_on_quadrants": sum(a // 2 == t // 2 for a, t in quads) / max(len(quads), 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

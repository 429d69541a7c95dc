"""When should the training-free policy fetch crops? Accuracy and RTR of each rule, on a split.

    python experiments/attention_calibrate.py [--model src/awares/assets/base] [--data synthetic:val:400]

Runs the ``attention`` policy twice on ``--data``: never fetching crops and always fetching them.
Then, for each rule "fetch when the attention's focus (its peak's share of the visual attention)
is at least F, or the low-res answer's first token is less probable than C", it takes each
sample's answer and RTR from the run the rule picks, and prints accuracy, RTR and call rate. The
shipped defaults (``AttentionConfig.focus`` and ``confidence_threshold``) are the rule with
the best accuracy at RTR <= 0.45 on val.
"""

from __future__ import annotations

import argparse
import statistics

from awares.data import resolve
from awares.evaluate.metrics import exact_match
from awares.models import HFBackend, default_model_dir
from awares.runtime import AttentionConfig, Engine, Request, RuntimeConfig

FOCUS, CONFIDENCE = (0.2, 0.3, 0.4, 0.5, 0.6), (0.0, 0.5, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("full")))
    parser.add_argument("--data", default="synthetic:val:400")
    args = parser.parse_args()

    records, _ = resolve(args.data)
    backend = HFBackend.load(args.model)
    requests = [Request(r.image, r.question) for r in records]
    runs = {}
    for name, focus, confidence in (("never", 2.0, 0.0), ("always", 0.0, 2.0)):
        config = RuntimeConfig(max_new_tokens=16, attention=AttentionConfig(confidence, focus))
        runs[name] = Engine(backend, config).answer_batch(requests, "attention")
    rows = [
        (n.attention["focus"], n.attention["confidence"], (exact_match(n.answer, r.answers), n.rtr),
         (exact_match(a.answer, r.answers), a.rtr))
        for n, a, r in zip(runs["never"], runs["always"], records)
    ]  # fmt: skip
    for focus in FOCUS:
        for confidence in CONFIDENCE:
            picked = [always if f >= focus or c < confidence else never for f, c, never, always in rows]
            calls = statistics.fmean(f >= focus or c < confidence for f, c, _, _ in rows)
            accuracy, rtr = (statistics.fmean(p[k] for p in picked) for k in (0, 1))
            print(f"focus >= {focus} or confidence < {confidence}: accuracy {100 * accuracy:.1f}  "
                  f"RTR {rtr:.3f}  calls {calls:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

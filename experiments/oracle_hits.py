"""How often a curation run's crop targets cover the dataset's own evidence, per kind of question.

    python experiments/oracle_hits.py runs/pipeline-oracle-attention/curate

Reads the run's shards (each curated sample with its label, kind and ``evidence_coverage``: the
share of the dataset's evidence boxes that its crop targets hold) and prints, for the samples
labelled ``crop``, per kind, how many there are and the share whose targets hold at least 90% of
the evidence (the evaluation's hit rule). Useful for an oracle that saw no boxes (``attention``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from awares.crops import HIT_COVERAGE
from awares.jsonl import rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curate", type=Path, help="a curation output folder (awares curate --out, or RUN/curate)")
    args = parser.parse_args()
    shards = [p for p in sorted((args.curate / "shards").glob("shard-*.jsonl")) if not p.name.endswith(".errors.jsonl")]
    labelled = [r for path in shards for r in rows(path) if r.get("label") == "crop"]
    report = {}
    for kind in sorted({r.get("kind") or "-" for r in labelled}):
        group = [r for r in labelled if (r.get("kind") or "-") == kind]
        hits = sum(r.get("evidence_coverage", 0.0) >= HIT_COVERAGE for r in group)
        report[kind] = {"labelled_crop": len(group), "hit_rate": hits / len(group)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

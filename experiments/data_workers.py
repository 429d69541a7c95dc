"""Training time with and without a data-loading worker, and whether the weights come out the same.

    python experiments/data_workers.py base configs/ground.toml --init runs/pipeline/base/final --steps 300
    python experiments/data_workers.py sft configs/sft.toml --init runs/pipeline/ground/final \\
        --data runs/pipeline/curate/trajectories.jsonl --steps 200

Runs the stage's config for ``--steps`` steps twice, with ``workers = 0`` and ``workers = 1``, in
fresh folders under ``--out``, one after the other, and prints as JSON (also written to
``--out/STAGE.json``) the seconds of each training loop (from its ``train_log.json``), their ratio
and whether the two runs' weight digests are equal. One run each on a shared machine: compare the
ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from awares.train.base import BaseTrainConfig, train_base
from awares.train.sft import SFTConfig, train_sft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["base", "sft"])
    parser.add_argument("config", help="the stage's TOML")
    parser.add_argument("--init", required=True, help="the checkpoint to start from")
    parser.add_argument("--data", default="", help="trajectories.jsonl (sft)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="runs/bench/data_workers")
    args = parser.parse_args()
    report: dict[str, Any] = {"stage": args.stage, "config": args.config, "steps": args.steps}
    for workers in (0, 1):
        out = Path(args.out) / f"{args.stage}-w{workers}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
        values = {"max_steps": args.steps, "workers": workers, "output_dir": str(out)}
        if args.stage == "base":
            final = train_base(BaseTrainConfig.from_toml(args.config).with_values({**values, "init": args.init}))
        else:
            extra = {"model": args.init, **({"data": args.data} if args.data else {})}
            final = train_sft(SFTConfig.from_toml(args.config).with_values({**values, **extra}))
        log = json.loads((Path(final) / "train_log.json").read_text())
        report[f"workers_{workers}"] = {"seconds": log["seconds"], "digest": log["rank_weight_digests"][0]}
    report["ratio"] = report["workers_1"]["seconds"] / report["workers_0"]["seconds"]
    report["same_weights"] = report["workers_1"]["digest"] == report["workers_0"]["digest"]
    (Path(args.out) / f"{args.stage}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

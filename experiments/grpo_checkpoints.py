"""Evaluate every checkpoint of a GRPO run as a `crops` policy: which step to keep, chosen on val.

    python experiments/grpo_checkpoints.py --run runs/pipeline-v10/grpo --data synthetic:val:400 \\
        --out runs/val-v10 [--sft runs/pipeline-v10/sft/final] [--base src/awares/assets/base]

A GRPO run saves ``checkpoints/checkpoint-N`` (the weights and the optimizer state) every ``save_steps``
and ``final`` as a loadable model. Each ``checkpoint-N`` is evaluated with the configuration and processor
of ``final`` as ``grpo_N``, ``final`` as the step it holds (the last, or the best on
``eval_data`` with ``load_best_model_at_end``), ``--sft`` (the run's start) as ``sft``
and ``--base`` at full resolution as ``full``: one table in ``--out`` (``table.md``,
``summary.json``), resumable like `awares eval`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from awares.data import resolve
from awares.evaluate import evaluate
from awares.models import HFBackend, default_model_dir
from awares.runtime import Engine, RuntimeConfig


def loadable(step: Path, final: Path, into: Path) -> Path:
    """A model folder of ``step``'s weights with ``final``'s configuration and processor files."""
    into.mkdir(parents=True)
    (into / "model.safetensors").symlink_to((step / "model.safetensors").resolve())
    for f in final.iterdir():
        if f.is_file() and f.suffix in {".json", ".jinja"} and f.name != "train_log.json":
            (into / f.name).symlink_to(f.resolve())
    return into


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a GRPO output folder (checkpoints/checkpoint-N and final)")
    p.add_argument("--data", default="synthetic:val:400")
    p.add_argument("--out", required=True)
    p.add_argument("--sft", default="", help="also evaluate this policy (the run's start) as `sft`")
    p.add_argument("--base", default="", help="base VLM for the `full` row (default: the shipped one)")
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    run, runtime = Path(a.run), RuntimeConfig(batch_size=a.batch_size)
    records, errors = resolve(a.data)
    if errors:
        raise SystemExit(f"{len(errors)} bad rows in {a.data}: {errors[:3]}")
    log = json.loads((run / "final" / "train_log.json").read_text())
    last = log.get("final_step", log["config"]["max_steps"])  # the step `final` holds
    models = {"full": Path(a.base or default_model_dir("full"))}
    if a.sft:
        models["sft"] = Path(a.sft)
    steps = sorted(int(s.name.split("-")[1]) for s in (run / "checkpoints").glob("checkpoint-[0-9]*"))
    with tempfile.TemporaryDirectory() as tmp:
        for n in steps:
            if n != last:
                step = run / "checkpoints" / f"checkpoint-{n}"
                models[f"grpo_{n}"] = loadable(step, run / "final", Path(tmp) / str(n))
        models[f"grpo_{last}"] = run / "final"
        for name, model in models.items():  # one model in memory at a time
            engine = Engine(HFBackend.load(model), runtime)
            _, table = evaluate({name: ("full" if name == "full" else "crops", engine)}, records, Path(a.out))
    print(table)


if __name__ == "__main__":
    main()

"""How long each stage of a finished `awares pipeline` run took, read from its output files.

    python experiments/stage_times.py runs/pipeline

A stage ends when the newest file in its folder (``base``, ``ground``, ``curate``, ``sft``, ``grpo``,
``eval``) was written and starts when the stage before it ended; the first starts with the oldest
file of the run (the tiny model built a few seconds after the command started). Folders a run does
not have are left out. Valid for a run that was not interrupted: a resumed stage spans the pause.
"""

from __future__ import annotations

import argparse
from pathlib import Path

STAGES = ["base", "ground", "curate", "sft", "grpo", "eval"]


def newest(folder: Path) -> float:
    return max(p.stat().st_mtime for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the pipeline's output folder")
    args = parser.parse_args()
    started = min(p.stat().st_mtime for p in args.out.rglob("*") if p.is_file())
    previous = started
    print("| stage | time |\n|---|---|")
    for stage in STAGES:
        if not (args.out / stage).is_dir():
            continue
        ended = newest(args.out / stage)
        seconds = round(ended - previous)
        print(f"| {stage} | {seconds // 60} min {seconds % 60} s |")
        previous = ended
    total = round(previous - started)
    print(f"| total | {total // 60} min {total % 60} s |")


if __name__ == "__main__":
    main()

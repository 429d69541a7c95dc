"""`awares pipeline CONFIG`: base VLM (-> grounding) -> curation -> SFT -> GRPO -> evaluation, in one
resumable run.

Every stage writes under ``out_dir``. A trainer whose ``final/train_log.json`` exists (written last)
is skipped; an interrupted one resumes from its last checkpoint. Curation and evaluation resume per
sample, so re-running the same command finishes whatever is missing and redoes nothing.
``out_dir/stage_times.json`` holds the wall seconds of each stage (added up over the runs it took).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .curate import CurateConfig, RuleJudge, curate, make_oracle
from .data import resolve
from .errors import ConfigError, InputError
from .evaluate import evaluate
from .models import HFBackend
from .runtime import Engine, RuntimeConfig
from .train.base import BaseTrainConfig, train_base
from .train.config import TomlConfig
from .train.grpo import GRPOConfig, train_grpo
from .train.sft import SFTConfig, train_sft


@dataclass
class PipelineConfig(TomlConfig):
    """Which stage configs to run and on what data; `configs/pipeline.toml` is the CPU one."""

    out_dir: str = "runs/pipeline"
    base: str = "configs/base.toml"  # each stage's TOML; "" uses the stage's defaults
    sft: str = "configs/sft.toml"
    grpo: str = "configs/grpo.toml"
    base_model: str = ""  # a checkpoint to start from instead of training the base VLM; `ground` runs on it
    # A second base run (a base TOML) trained further from the base's final: teaching the base to
    # ground; its result is the base VLM of every later stage. A list runs each further from the last
    # (a size curriculum: configs/all-sizes/pipeline.toml), in out_dir/ground, ground-2, ... "" skips it.
    ground: str | list[str] = ""
    curate_data: str = "synthetic:train:2000"
    eval_data: str = "synthetic:test"
    keep_unsolvable: bool = False  # curation: keep samples neither view answered
    oracle: Literal["gt", "attention"] = "gt"  # curation's grounding: the data's boxes or the base's attention
    batch_size: int = 8
    max_new_tokens: int = 16
    # Keys set on top of a stage's TOML, by stage: `[overrides.base] max_steps = 300` runs a stage
    # config shortened (scripts/gpu_check.sh's short run) without a copy of it.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.ground, str):
            self.ground = [self.ground] if self.ground else []
        unknown = set(self.overrides) - {"base", "ground", "sft", "grpo"}
        if unknown:
            raise ConfigError(f"overrides name unknown stages {sorted(unknown)}; stages are base, ground, sft, grpo")

    def stage(self, name: str, cls: type[TomlConfig], toml: str | None = None, **paths: str) -> Any:
        """Stage ``name``'s config: its TOML (``toml``, else the field ``name``), the pipeline's
        ``paths`` and the stage's overrides."""
        config = cls.load(getattr(self, name) if toml is None else toml, **paths)
        return config.with_values(self.overrides.get(name, {}), f"[overrides.{name}]")


def _trained(final: Path) -> bool:
    return (final / "train_log.json").is_file()


class StageTimes:
    """``<out>/stage_times.json``: the wall seconds of each stage, written as each one ends; a stage
    run again (resumed, or curation and evaluation finishing their samples) adds its seconds."""

    def __init__(self, out: Path):
        self.path = out / "stage_times.json"
        self.seconds: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.seconds, indent=2))
        os.replace(partial, self.path)


def _train_once(
    name: str, stage: Any, train: Callable[[Any], Any], clock: StageTimes, say: Callable[[str], None]
) -> Path:
    """``stage.output_dir/final``: trained by ``train(stage)`` and timed as ``name``, unless a
    finished run is there; an interrupted one resumes."""
    final = Path(stage.output_dir) / "final"
    if _trained(final):
        say(f"{name}: done, skipped")
    else:
        say(f"{name}: training")
        with clock.stage(name):
            train(stage)
    return final


def run_pipeline(config: PipelineConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or finish) every stage; return the evaluation summaries by policy name."""
    out = Path(config.out_dir)
    clock = StageTimes(out)
    base = Path(config.base_model) if config.base_model else out / "base" / "final"
    if config.base_model or _trained(base):
        say(f"base: using {base}")
    else:
        say("base: training")
        with clock.stage("base"):
            base = train_base(config.stage("base", BaseTrainConfig, output_dir=str(out / "base")))
    for index, toml in enumerate(config.ground, 1):
        name = "ground" if index == 1 else f"ground-{index}"
        stage = config.stage("ground", BaseTrainConfig, toml, init=str(base), output_dir=str(out / name))
        base = _train_once(name, stage, train_base, clock, say)

    runtime = RuntimeConfig(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    base_engine = Engine(HFBackend.load(base), runtime)
    say("curate: labelling, grounding, writing trajectories")
    records, _ = resolve(config.curate_data)
    curation = CurateConfig(
        out_dir=str(out / "curate"), batch_size=config.batch_size, keep_unsolvable=config.keep_unsolvable
    )
    with clock.stage("curate"):
        curate(records, base_engine, RuleJudge(), make_oracle(config.oracle, engine=base_engine), curation)
    trajectories = str(out / "curate" / "trajectories.jsonl")
    if not Path(trajectories).read_text().strip():
        raise InputError(
            f"curation kept no trajectory of {len(records)} samples: the base VLM answered none of them right, "
            f"at low or full resolution ({out / 'curate' / 'summary.json'}). Train the base longer "
            "([overrides.base] max_steps) or start from a checkpoint that can answer (--base-model)"
        )

    policies = {}
    for name, cls, train, start in [
        ("sft", SFTConfig, train_sft, base),
        ("grpo", GRPOConfig, train_grpo, out / "sft" / "final"),
    ]:
        stage = config.stage(name, cls, data=trajectories, model=str(start), output_dir=str(out / name))
        policies[name] = _train_once(name, stage, train, clock, say)

    say("eval: full, low, oracle (base model), sft and awares (crops policy)")
    test, _ = resolve(config.eval_data)
    runs = {
        "full": ("full", base_engine),
        "low": ("low", base_engine),
        "oracle": ("oracle", base_engine),
        "sft": ("crops", Engine(HFBackend.load(policies["sft"]), runtime)),
        "awares": ("crops", Engine(HFBackend.load(policies["grpo"]), runtime)),
    }
    with clock.stage("eval"):
        summaries, table = evaluate(runs, test, out / "eval", batch_size=config.batch_size)
    say(table)
    return summaries

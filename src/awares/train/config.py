"""The training stages' configs, each a dataclass whose defaults are the stage's and whose fields
the command line offers as flags (``cli.options.add_config_flags``): light to import, so that the
CLI builds its parser without the trainers."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import torch

from ..errors import ConfigError

CostMode = Literal["area", "per-crop", "tokens"]


def _read_extended(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, tuple[Any, Path]]:
    """The keys of the TOML file ``path``, each with the file that set it (for errors that name the
    right file). ``extends = "other.toml"`` (relative to the file) starts from that file's keys, and
    each key set here replaces the other's whole (a table too), so an ablation states only what it
    changes. A missing or unreadable file, or a loop, is a ``ConfigError``."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    parent = data.pop("extends", None)
    own = {key: (value, path) for key, value in data.items()}
    if parent is None:
        return own
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must name a TOML file, not {parent!r}")
    here = path.resolve()
    if here in seen:
        raise ConfigError(f"{path}: extends loops back to itself ({' -> '.join(str(p) for p in (*seen, here))})")
    return _read_extended(path.parent / parent, (*seen, here)) | own


class TomlConfig:
    """Mixin for config dataclasses: ``from_toml`` (unknown keys are errors, not silently ignored)."""

    @classmethod
    def from_toml(cls, path: str | Path):
        """The config in ``path`` (see ``_read_extended`` for ``extends``); a file that is missing, not TOML,
        names unknown keys or holds a bad value raises ``ConfigError`` (the CLI exits 2 with its message)."""
        entries = _read_extended(Path(path))
        known = {f.name for f in fields(cls)}
        unknown: dict[Path, list[str]] = {}
        for key in sorted(set(entries) - known):
            unknown.setdefault(entries[key][1], []).append(key)
        if unknown:
            raise ConfigError("; ".join(f"unknown keys in {file}: {', '.join(keys)}" for file, keys in unknown.items()))
        try:
            return cls(**{key: value for key, (value, _) in entries.items()})
        except ValueError as err:
            raise ConfigError(f"{path}: {err}") from err

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any):
        """The config of the TOML file ``path`` (the defaults when empty), with the ``overrides``
        that are not None set on top (command-line options, paths a pipeline chooses): 0 and false
        take effect."""
        config = cls.from_toml(path) if path else cls()
        return config.with_values({k: v for k, v in overrides.items() if v is not None}, "overrides")

    def with_values(self, values: dict[str, Any], source: str = "overrides"):
        """A copy with ``values`` set (checked as a TOML file's keys are); ``source`` names them in errors."""
        unknown = set(values) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown keys in {source}: {', '.join(sorted(unknown))}")
        try:
            return replace(self, **values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{source}: {err}") from err


@dataclass
class WeightOptions:
    """Which weights a trainer updates and their dtype: all, or a PEFT LoRA on the language model's
    attention (the vision tower untouched), the vision tower frozen or not. Saved checkpoints are
    plain (LoRA merged). ``bfloat16`` with ``lora`` is the setting for a 7B checkpoint on one GPU."""

    dtype: str = "float32"  # float32, bfloat16 or float16
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory
    freeze_vision: bool = False
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    # Module names LoRA adapts in the language model; empty: every layer kind's projections, as the
    # model's family names them (models.families: a hybrid family's linear-attention layers too)
    lora_targets: list[str] = field(default_factory=list)

    def torch_dtype(self) -> torch.dtype:
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be float32, bfloat16 or float16, not {self.dtype!r}")
        return dtype


@dataclass
class SFTConfig(WeightOptions, TomlConfig):
    """The SFT run; loadable from TOML (`configs/sft.toml`). Defaults: the paper's recipe
    (which trains a LoRA: ``lora = true`` for a real checkpoint)."""

    data: str = "runs/curate/trajectories.jsonl"
    model: str = ""  # checkpoint to start from; empty: the embedded base model
    output_dir: str = "runs/sft"
    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8
    gradient_accumulation_steps: int = 1  # the paper's effective batch is 128
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.001
    call_weight: float = 5.0  # loss weight of the tool-call turn's tokens
    # Loss weight of the crop-id tokens inside a call (0: as the rest of the call). Where to look
    # is one token among the call's and the answer's; weighting the whole call instead (50) made
    # the policy call on most global questions.
    crop_weight: float = 0.0
    seed: int = 0
    workers: int = 0  # data-loading processes beside training (collation included); 0: in the main process
    # Batches of trajectories with similar visual-token counts (transformers' LengthGroupedSampler),
    # for less padding; false: random batches.
    group_by_length: bool = False
    logging_steps: int = 10
    save_steps: int = 200


@dataclass
class GRPOConfig(WeightOptions, TomlConfig):
    """The GRPO run; loadable from TOML (`configs/grpo.toml`). Paper values where they fit.

    With ``lora = true`` the reference is the policy with its adapter switched off, not a second
    copy of the model: with ``dtype = "bfloat16"`` that is what fits a 7B policy on one GPU."""

    data: str = "runs/curate/trajectories.jsonl"  # prompts: image, question, answers, label
    model: str = "runs/sft/final"  # policy init and frozen reference
    output_dir: str = "runs/grpo"
    max_steps: int = 60
    prompts_per_step: int = 4
    num_generations: int = 8  # G rollouts per prompt
    temperature: float = 1.0
    max_new_tokens: int = 16
    learning_rate: float = 2e-5
    lr_scheduler_type: str = "constant"  # a transformers scheduler type, e.g. "cosine"
    warmup_ratio: float = 0.0  # of the optimizer steps, with the learning rate rising from 0
    beta: float = 0.05  # KL to the reference (0: none, and no reference pass)
    epsilon: float = 0.2
    num_iterations: int = 1  # policy updates per batch of rollouts
    micro_batch_size: int = 16  # conversations per forward/backward pass in the update
    rollout_batch_size: int = 64  # conversations generated together
    max_grad_norm: float = 1.0
    miss_penalty: float = 2.0
    call_cost: float = 0.25
    # The paper's 0.01 x ||C||, with the requested area in percent of the image: a quadrant costs
    # 0.25 + 0.25, `all` 0.25 + 1.0 (why percent: docs/experiments/training.md, "GRPO").
    area_cost: float = 1.0
    cost_mode: CostMode = "area"
    format_bonus: float = 0.0
    # Not the paper's: minus this for a call whose crops hold less than 90% of the oracle's evidence
    # boxes (trajectory rows' `boxes`), so a crop that clips the evidence but keeps the answer no
    # longer earns what the evidence's own cover earns. 0 = the paper's reward.
    evidence_penalty: float = 0.0
    # What a malformed call does in rollouts: count as the (wrong) answer, or fetch `all` (the
    # runtime's default at inference, which a policy can learn to exploit: training.md, "GRPO").
    on_malformed: Literal["all", "answer"] = "answer"
    # True: each step draws as many `crop` as `direct` prompts, a guard against tool-use collapse.
    # False (the paper): the curated mix.
    balance_labels: bool = False
    seed: int = 0
    save_steps: int = 20
    save_total_limit: int = 0  # checkpoints kept (the newest, and the best scored): 0 keeps every one
    # Held-out data (a `--data` spec) each saved step's policy is scored on (train/select.py), and
    # whether `final` is the best scored step instead of the last.
    eval_data: str = ""
    eval_batch_size: int = 8
    load_best_model_at_end: bool = False

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for name in ("cost_mode", "on_malformed"):
            allowed = get_args(hints[name])
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {getattr(self, name)!r}")
        from transformers import SchedulerType  # here: the CLI reads these configs for its help

        schedulers = [s.value for s in SchedulerType]
        if self.lr_scheduler_type not in schedulers:
            raise ValueError(
                f"lr_scheduler_type must be one of {', '.join(schedulers)}, not {self.lr_scheduler_type!r}"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive for sampled rollouts, not {self.temperature}")
        if self.load_best_model_at_end and not self.eval_data:
            raise ValueError("load_best_model_at_end needs eval_data: the split the best step is chosen on")

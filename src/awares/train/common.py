"""What every trainer here shares: TOML configs, Trainer arguments, resume and the training log."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import AutoConfig, AutoModelForImageTextToText, Trainer, TrainingArguments

from ..errors import ConfigError
from ..models.families import family_of
from .config import WeightOptions


def load_trainable(path: str | Path, options: WeightOptions) -> Any:
    """The checkpoint at ``path`` ready to train as ``options`` say; ``ModelLoadError`` for a model
    type awares cannot run, before its weights are read."""
    family_of(AutoConfig.from_pretrained(path))
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=options.torch_dtype())
    if options.freeze_vision:
        model.model.visual.requires_grad_(False)
    if options.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not options.lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = options.lora_targets or family_of(model).lora_targets

    lora = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=rf".*language_model.*\.({'|'.join(targets)})",  # the LLM only
    )
    return get_peft_model(model, lora)


def plain(model: Any, options: WeightOptions) -> Any:
    """The trained model as a plain checkpoint: LoRA merged into the weights."""
    return model.merge_and_unload() if options.lora else model


def world_size() -> int:
    """Processes in this run (``WORLD_SIZE``, set by ``accelerate launch`` and ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_process(total: int, what: str) -> int:
    """Each process's share of a configured ``total`` (a batch), so that the effective batch is the
    configured one however many processes run; a total the processes cannot share evenly is refused."""
    if total % world_size():
        raise ConfigError(f"{what} = {total} cannot be shared evenly by {world_size()} processes")
    return total // world_size()


def weights_digest(model: Any) -> str:
    """SHA-256 of the bytes of every trainable weight (the weights data parallelism keeps in step):
    the same on every rank of a run, unless the ranks have drifted apart."""
    digest = hashlib.sha256()
    for name, weight in sorted(model.named_parameters(), key=lambda item: item[0]):
        if weight.requires_grad:
            digest.update(name.encode() + weight.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def rank_digests(accelerator: Any, model: Any) -> list[str]:
    """``weights_digest`` of every rank's model, gathered (a collective: every rank must call it)."""
    from accelerate.utils import gather_object

    own = weights_digest(model)
    return gather_object([own]) if accelerator.num_processes > 1 else [own]


def training_arguments(out: Path, config: Any, **overrides: Any) -> TrainingArguments:
    """Trainer arguments from a config with batch_size, learning_rate, weight_decay, logging_steps,
    save_steps, seed and workers: cosine schedule, checkpoints under ``out/checkpoints`` (the last two
    kept), ``workers`` persistent data-loading processes; ``overrides`` replace any of them.
    ``batch_size`` is per optimizer step over all processes (each takes its share)."""
    arguments: dict[str, Any] = {
        "output_dir": str(out / "checkpoints"),
        "per_device_train_batch_size": per_process(config.batch_size, "batch_size"),
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": "cosine",
        "weight_decay": config.weight_decay,
        "logging_steps": config.logging_steps,
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "remove_unused_columns": False,
        # One persistent worker makes the batches the main process would have made, in the same order
        # (its copy of the dataset's random state runs on across epochs), while the main process trains.
        "dataloader_num_workers": config.workers,
        "dataloader_persistent_workers": config.workers > 0,
        "report_to": "none",
        "seed": config.seed,
        "use_cpu": not torch.cuda.is_available(),
    }
    return TrainingArguments(**{**arguments, **overrides})


class SamplerTrainer(Trainer):
    """A ``Trainer`` that draws its training examples with ``train_sampler`` when one is given
    (transformers' own choice otherwise): the hook for length-grouped batches."""

    def __init__(self, *args: Any, train_sampler: Sampler | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.train_sampler = train_sampler

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)


def last_checkpoint(out: Path) -> Path | None:
    """The newest ``checkpoint-N`` under ``out/checkpoints``: where a re-run resumes (transformers'
    own rule, which passes over strays such as ``checkpoint-1.bak``)."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / "checkpoints"
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def write_train_log(
    final: Path, config: Any, trainer: Any, seconds: float, resumed_from: Path | None, digests: list[str], **extra: Any
) -> None:
    """``final/train_log.json`` (main process only): config, wall time, the checkpoint resumed from,
    the processes and the effective batch, every rank's weight ``digests`` (``rank_digests``), and
    the loss history."""
    if not trainer.accelerator.is_main_process:
        return
    args = trainer.args
    log = {
        "config": asdict(config),
        "resumed_from": resumed_from.name if resumed_from else None,
        "seconds": seconds,
        "world_size": world_size(),
        "effective_batch_size": args.per_device_train_batch_size * world_size() * args.gradient_accumulation_steps,
        "rank_weight_digests": digests,
        **extra,
        "log_history": trainer.state.log_history,
    }
    (final / "train_log.json").write_text(json.dumps(log, indent=2))

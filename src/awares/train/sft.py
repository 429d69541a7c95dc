"""Cold-start SFT on curated multi-turn trajectories: loss on assistant turns, tool calls weighted.

Why transformers' ``Trainer`` and not TRL's ``SFTTrainer``: the AwaRes recipe weights the tool-call
turn's tokens 5x (w_t = 5), and ``SFTTrainer`` has only an on/off assistant mask, no per-token
weights. The collator builds labels and weights; ``WeightedLossTrainer`` applies them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..crops import VisionGrid
from ..errors import InputError
from ..images import image_size, load_image
from ..jsonl import rows
from ..models import load_processor, model_dir
from ..models.default import default_base_dir
from ..models.families import family_of
from ..models.processor import save_processor
from ..protocol import Message
from .collate import IGNORE_INDEX, ChatCollator
from .common import (
    SamplerTrainer,
    last_checkpoint,
    load_trainable,
    plain,
    rank_digests,
    training_arguments,
    write_train_log,
)
from .config import SFTConfig


class TrajectoryDataset(Dataset):
    """Curated trajectories (``awares curate`` output) as conversations with their images loaded.

    Rows without messages, or naming images that are missing, are reported in ``errors`` and skipped.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"trajectory file {path} does not exist")
        self.root, self.rows, self.errors = path.parent, [], []
        for row in rows(path):
            images = _image_paths(row)
            missing = [p for p in images if p is None or not (self.root / p).is_file()]
            if not row.get("messages") or missing:
                self.errors.append(f"{row.get('id')}: {'missing images ' + str(missing) if missing else 'no messages'}")
                continue
            self.rows.append(row)
        if not self.rows:
            raise InputError(f"no usable trajectories in {path}")

    def __len__(self) -> int:
        return len(self.rows)

    def visual_tokens(self, grid: VisionGrid) -> list[int]:
        """Each trajectory's visual tokens on ``grid``, from its images' headers: its length, near enough."""
        return [sum(grid.tokens(*image_size(self.root / p)) for p in _image_paths(row)) for row in self.rows]

    def __getitem__(self, index: int) -> list[Message]:
        def load(part: dict[str, Any]) -> dict[str, Any]:
            if part.get("type") != "image":
                return part
            return {"type": "image", "image": load_image(self.root / part["image"])}

        return [{"role": m["role"], "content": [load(p) for p in _parts(m)]} for m in self.rows[index]["messages"]]


def _image_paths(row: dict[str, Any]) -> list[Any]:
    return [p.get("image") for m in row.get("messages") or [] for p in _parts(m) if p.get("type") == "image"]


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [{k: v for k, v in p.items() if v is not None} for p in content or []]


class WeightedLossTrainer(SamplerTrainer):
    """Next-token cross-entropy averaged with the collator's per-token ``loss_weights``."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any):
        weights, labels = inputs.pop("loss_weights"), inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits[:, :-1].float()
        targets, weights = labels[:, 1:], weights[:, 1:].to(logits.device)
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
        loss = (token_loss * weights).sum() / weights.sum().clamp(min=1e-8)
        return (loss, outputs) if return_outputs else loss


def train_sft(config: SFTConfig) -> Path:
    """Fine-tune on the trajectories; save a plain (LoRA-merged) checkpoint to ``output_dir/final``."""
    set_seed(config.seed)
    source = model_dir(config.model) if config.model else default_base_dir()
    dataset = TrajectoryDataset(config.data)
    for error in dataset.errors:
        print(f"awares: skipping trajectory {error}")
    processor = load_processor(source)
    model = load_trainable(source, config)
    out = Path(config.output_dir)
    args = training_arguments(
        out,
        config,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    sampler = None
    if config.group_by_length:
        lengths = dataset.visual_tokens(VisionGrid.from_processor(processor))
        sampler = LengthGroupedSampler(args.train_batch_size * args.gradient_accumulation_steps, lengths=lengths)
    trainer = WeightedLossTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=ChatCollator(
            processor, family_of(model), call_weight=config.call_weight, crop_weight=config.crop_weight
        ),
        train_sampler=sampler,
    )
    resumed_from = last_checkpoint(out)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resumed_from) if resumed_from else None)
    final = out / "final"
    digests = rank_digests(trainer.accelerator, trainer.model)  # before LoRA is merged on the main process
    if trainer.accelerator.is_main_process:
        plain(trainer.model, config).save_pretrained(final)
        save_processor(processor, final)
    seconds = time.perf_counter() - started
    write_train_log(
        final, config, trainer, seconds, resumed_from, digests, source=str(source), trajectories=len(dataset)
    )
    return final

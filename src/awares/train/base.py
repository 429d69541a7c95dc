"""Train the tiny base VLM from scratch: single-turn VQA on full, low-res and cropped views.

A plain VLM, no tools: it learns to answer questions from whatever view it is shown, so that on the
synthetic benchmark it reads plate codes at full resolution and cannot at half resolution. With
``ground`` > 0 it is also taught to *ground*: asked which crop holds the plate on the half-resolution
view, to answer the crop id of the plate's cheapest cover (what the oracle mapping gives); with
``ground_steps`` > 0 a grounding-only run comes first, at a constant learning rate. With ``init`` a
trained base is taught further (e.g. to ground, its own tasks mixed in) instead of a fresh model.
Off in the shipped recipe: the bases trained so are in docs/experiments/localisation.md.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler
from transformers import AutoModelForImageTextToText, SchedulerType, TrainerCallback, set_seed

from ..crops import Box, boxes_to_crops, crop_box, low_res_size, low_res_view
from ..data import Record, read_jsonl
from ..data.sources import synthetic_dir
from ..data.synthetic import CELL, SPLIT_OFFSETS, corpus
from ..errors import ConfigError
from ..images import image_size, load_image
from ..models import TinyConfig, build_tiny, load_processor
from ..models.families import family_of
from ..models.processor import save_processor
from ..protocol import Message, turn1_messages
from .collate import ChatCollator
from .common import SamplerTrainer, last_checkpoint, rank_digests, training_arguments, write_train_log
from .config import TomlConfig


@dataclass
class BaseTrainConfig(TomlConfig):
    """Everything the base-model run needs; loadable from a TOML file. Defaults: `configs/base.toml`."""

    output_dir: str = "runs/base"
    init: str = ""  # a trained base (with its processor) to train further; "" builds a fresh tiny model
    train_split: str = "train"  # the synthetic split it draws from; "train-all": every size up to 2,048 tokens
    train_samples: int = 6000
    detail_fraction: float = 0.5
    max_steps: int = 2400
    batch_size: int = 8
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"  # a transformers scheduler type, e.g. "constant_with_warmup"
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    # Probability of each view of the image: the full image, the 0.5x view, a crop of the set holding
    # the evidence, and a zoom on the evidence.
    view_full: float = 0.45
    view_low: float = 0.25
    view_crop: float = 0.1
    view_zoom: float = 0.2
    # Curriculum. Until `read_warmup`: detail questions only, shown as zooms with `zoom_min_cells` of
    # margin around the evidence (-1: the 84-px plate's middle 28-px cell, the one token that holds
    # its code). Until `curriculum`: zooms widen to `zoom_max_cells` cells of margin
    # and fall from `view_zoom_start` to `view_zoom` of the views. Until `task_warmup`: detail questions
    # only: a from-scratch model learns to read a one-token tag alone long before it can find it among
    # hundreds of tokens (docs/experiments/training.md). Global questions get the base view mix (no crop).
    read_warmup: float = 0.2
    curriculum: float = 0.45
    view_zoom_start: float = 0.8
    zoom_min_cells: int = -1
    zoom_max_cells: int = 10
    task_warmup: float = 0.45
    # From `read_warmup` on, this share of the detail questions is replaced by the grounding question
    # on the 0.5x view, answered with the crop ids of the evidence's cheapest cover.
    ground: float = 0.0
    # Before all of the above: this many grounding-only steps at a constant `ground_learning_rate`
    # (after `warmup_steps`), saved to `output_dir/ground/final`, where the main run starts from.
    ground_steps: int = 0
    ground_learning_rate: float = 5e-4
    logging_steps: int = 25
    save_steps: int = 500
    threads: int = 0  # torch threads; 0 keeps torch's default
    # Data-loading processes beside training (view choice and collation); 0: in the main process. A
    # worker does not see the curriculum's progress, so only for runs without one (as configs/ground.toml).
    workers: int = 0
    # Batches of views of similar size (`PooledLengthSampler`, pools of this many examples), for
    # less padding; 0: random batches. A grounding step of 8 spends about half its positions on
    # padding (experiments/batch_padding.py).
    length_pool: int = 0
    model: dict[str, Any] = field(default_factory=dict)  # TinyConfig overrides

    def __post_init__(self) -> None:
        if self.train_split not in SPLIT_OFFSETS:
            raise ValueError(f"train_split must be one of {', '.join(SPLIT_OFFSETS)}, not {self.train_split!r}")
        schedulers = [s.value for s in SchedulerType]
        if self.lr_scheduler not in schedulers:
            raise ValueError(f"lr_scheduler must be one of {', '.join(schedulers)}, not {self.lr_scheduler!r}")
        if self.length_pool < 0 or self.length_pool % self.batch_size:
            raise ValueError(
                f"length_pool must be 0 or a multiple of batch_size ({self.batch_size}), not {self.length_pool}"
            )
        if self.workers and max(self.read_warmup, self.curriculum, self.task_warmup) > 0:
            raise ValueError("workers > 0 needs read_warmup = curriculum = task_warmup = 0 (no curriculum)")


def zoom_box(boxes: list[Box], width: int, height: int, margin_cells: int, cell: int = CELL) -> Box:
    """The ``cell``-grid box around ``boxes`` grown by ``margin_cells`` cells on each side (inside the
    image); by default the grid the synthetic benchmark draws its plates on."""
    x0, y0 = min(b.x0 for b in boxes), min(b.y0 for b in boxes)
    x1, y1 = max(b.x1 for b in boxes), max(b.y1 for b in boxes)
    margin = margin_cells * cell

    def span(lo: int, hi: int, size: int) -> tuple[int, int]:
        top = size // cell * cell
        lo = min(max((lo - margin) // cell * cell, 0), top - cell)
        hi = min(-(-(hi + margin) // cell) * cell, top)
        return lo, max(hi, lo + cell)

    (x0, x1), (y0, y1) = span(x0, x1, width), span(y0, y1, height)
    return Box(x0, y0, x1, y1)


GROUND_QUESTION = "Which crop holds the red plate?"


@dataclass(frozen=True)
class Draw:
    """One training example decided before its image is loaded: the record and what to show.

    ``view`` is ``ground`` (the grounding question on the 0.5x view), ``full``, ``low``, ``crop``
    (the crop ``crop_id``) or ``zoom`` (``zoom_cells`` of margin around the evidence)."""

    record: Record
    view: str
    crop_id: str = ""
    zoom_cells: int = 0


class ViewDataset(Dataset):
    """Records as single-turn conversations on a randomly chosen view of the image.

    Indexed by position (the view is drawn then) or by a ``Draw`` made earlier with ``draw``, which
    is how ``PooledLengthSampler`` batches views of similar size together."""

    def __init__(self, records: list[Record], config: BaseTrainConfig):
        self.records, self.config = records, config
        self.rng = random.Random(config.seed)
        self.progress = 1.0  # fraction of training done; the curriculum callback moves it from 0
        self.detail = [r for r in records if r.kind == "detail" and r.evidence]

    def weights(self) -> tuple[list[float], int]:
        """View probabilities (full, low, crop, zoom) and the widest zoom margin at this point of training."""
        c = self.config
        if self.progress < c.read_warmup:
            return [0.0, 0.0, 0.0, 1.0], c.zoom_min_cells
        span = c.curriculum - c.read_warmup
        ramp = min((self.progress - c.read_warmup) / span, 1.0) if span > 0 else 1.0
        zoom = c.view_zoom_start + (c.view_zoom - c.view_zoom_start) * ramp
        others = c.view_full + c.view_low + c.view_crop
        rest = (1 - zoom) / others if others else 0.0
        return [c.view_full * rest, c.view_low * rest, c.view_crop * rest, zoom], c.zoom_min_cells + round(
            ramp * (c.zoom_max_cells - c.zoom_min_cells)
        )

    def __len__(self) -> int:
        return len(self.records)

    def draw(self, index: int) -> Draw:
        """Decide example ``index`` at this point of training (this moves the random state)."""
        record, c = self.records[index], self.config
        if self.progress < c.task_warmup and self.detail:
            record = self.detail[index % len(self.detail)]
        grounded = record.kind == "detail" and record.evidence and self.progress >= c.read_warmup
        if grounded and self.rng.random() < c.ground:
            return Draw(record, "ground")
        return self.draw_view(record)

    def draw_view(self, record: Record) -> Draw:
        """The view of ``record`` to answer its own question on."""
        weights, max_cells = self.weights()
        if record.kind != "detail":  # shapes: the base view mix, without full images while they are slow
            c = self.config
            weights = [c.view_full if self.progress >= c.curriculum else 0.0, c.view_low, 0.0, c.view_zoom]
        choice = self.rng.choices(["full", "low", "crop", "zoom"], weights=weights)[0]
        if choice == "low" and record.kind != "detail":  # no unanswerable examples: they only teach guessing
            return Draw(record, "low")
        local = record.evidence and (record.kind == "detail" or len(record.evidence) == 1)
        if choice == "crop" and record.kind == "detail" and record.evidence:
            crop_ids = boxes_to_crops(record.evidence, *image_size(record.image)).crop_ids
            return Draw(record, "crop", crop_id=self.rng.choice(crop_ids))
        if choice == "zoom" and local:
            # Below 0 cells only for the plate: inside a shape a zoom is one flat colour.
            low = self.config.zoom_min_cells if record.kind == "detail" else max(self.config.zoom_min_cells, 0)
            return Draw(record, "zoom", zoom_cells=self.rng.randint(low, max(max_cells, low)))
        return Draw(record, "full")

    def example(self, draw: Draw) -> list[Message]:
        """The conversation ``draw`` describes, its image loaded and viewed."""
        record = draw.record
        image = load_image(record.image)
        if draw.view == "ground":
            crop_ids = boxes_to_crops(record.evidence, *image.size).crop_ids
            return conversation(low_res_view(image), GROUND_QUESTION, ", ".join(crop_ids))
        if draw.view == "low":
            image = low_res_view(image)
        elif box := view_box(draw, *image.size):
            image = image.crop(box.as_tuple())
        return conversation(image, record.question, record.answers[0])

    def __getitem__(self, key: int | Draw) -> list[Message]:
        return self.example(key if isinstance(key, Draw) else self.draw(key))


class GroundingDataset(ViewDataset):
    """The grounding question alone, on the detail records: the warm-up run before the base's curriculum."""

    def __len__(self) -> int:
        return len(self.detail)

    def draw(self, index: int) -> Draw:
        return Draw(self.detail[index], "ground")


def view_box(draw: Draw, width: int, height: int) -> Box | None:
    """The part of the ``width`` x ``height`` image a crop or zoom view shows; None for the others."""
    if draw.view == "crop":
        return crop_box(draw.crop_id, width, height)
    if draw.view == "zoom":
        return zoom_box(draw.record.evidence_boxes(), width, height, draw.zoom_cells)
    return None


def view_pixels(draw: Draw) -> int:
    """Pixels of the view ``draw`` shows (its visual tokens, up to the processor's grid): a length to
    sort by, from the image file's header alone."""
    width, height = image_size(draw.record.image)
    if draw.view in ("ground", "low"):
        width, height = low_res_size(width, height)
    elif box := view_box(draw, width, height):
        width, height = box.width, box.height
    return width * height


class PooledLengthSampler(Sampler):
    """Random examples in batches of views of similar size, for less padding.

    Each pool of ``pool`` positions, in random order, is drawn (``ViewDataset.draw``, so the
    curriculum is at most a pool behind), sorted by ``view_pixels`` and cut into batches of
    ``batch_size``, which are yielded in random order. transformers' ``LengthGroupedSampler`` needs
    lengths fixed in advance; here the view, and so the length, is drawn during training."""

    def __init__(self, dataset: ViewDataset, batch_size: int, pool: int, seed: int = 0):
        if pool % batch_size:
            raise ConfigError(f"length_pool = {pool} must be a multiple of batch_size = {batch_size}")
        self.dataset, self.batch_size, self.pool = dataset, batch_size, pool
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Draw]:
        order = list(range(len(self.dataset)))
        self.rng.shuffle(order)
        for start in range(0, len(order), self.pool):
            draws = sorted((self.dataset.draw(i) for i in order[start : start + self.pool]), key=view_pixels)
            batches = [draws[i : i + self.batch_size] for i in range(0, len(draws), self.batch_size)]
            self.rng.shuffle(batches)
            for batch in batches:
                yield from batch


def conversation(image: Any, question: str, answer: str) -> list[Message]:
    """A single-turn training conversation without a system prompt."""
    messages = turn1_messages(image, question, system_prompt=None)
    return [*messages, {"role": "assistant", "content": [{"type": "text", "text": answer}]}]


class CurriculumCallback(TrainerCallback):
    """Tells the dataset how far training has got (also right after a resume)."""

    def __init__(self, dataset: ViewDataset):
        self.dataset = dataset

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.dataset.progress = state.global_step / max(state.max_steps, 1)


def training_records(config: BaseTrainConfig, root: Path, samples: int = 0) -> list[Record]:
    """The synthetic split a base run draws from (``samples`` of ``train_split``, default the config's
    ``train_samples``), written under ``root``; a bad generated row is an error, not skipped."""
    path = synthetic_dir(config.train_split, samples or config.train_samples, root, config.detail_fraction)
    records, errors = read_jsonl(path)
    if errors:
        raise ValueError(f"{len(errors)} bad rows in the generated training data: {errors[:3]}")
    return records


def train_base(config: BaseTrainConfig) -> Path:
    """Build the tiny model, train it on the synthetic train split, save it to ``output_dir/final``
    (after the grounding-only run to ``output_dir/ground/final`` when ``ground_steps`` > 0)."""
    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output_dir)
    init_dir = Path(config.init) if config.init else out / "init"
    if not (init_dir / "config.json").is_file():
        if config.init:
            raise ConfigError(f"init = {config.init!r}: no checkpoint there (config.json missing)")
        build_tiny(init_dir, TinyConfig(**{"extra_corpus": [*corpus(), GROUND_QUESTION], **config.model}))
    records = training_records(config, out / "data")
    start = init_dir
    if config.ground_steps:
        start = out / "ground" / "final"
        if not (start / "config.json").is_file():  # a finished warm-up is not run again on resume
            grounding = GroundingDataset(records, config)
            schedule = {"learning_rate": config.ground_learning_rate, "lr_scheduler_type": "constant_with_warmup"}
            run_trainer(config, out / "ground", init_dir, grounding, config.ground_steps, **schedule)
    schedule = {"lr_scheduler_type": config.lr_scheduler}
    return run_trainer(config, out, start, ViewDataset(records, config), config.max_steps, **schedule)


def run_trainer(
    config: BaseTrainConfig, out: Path, start: Path, dataset: ViewDataset, max_steps: int, **schedule: Any
) -> Path:
    """Train the checkpoint ``start`` on ``dataset`` for ``max_steps`` (resuming from ``out``'s last
    checkpoint), save it with the processor and its training log to ``out/final``."""
    processor = load_processor(start)
    model = AutoModelForImageTextToText.from_pretrained(start, dtype=torch.float32)
    args = training_arguments(out, config, max_steps=max_steps, warmup_steps=config.warmup_steps, **schedule)
    sampler = None
    if config.length_pool:
        sampler = PooledLengthSampler(dataset, args.per_device_train_batch_size, config.length_pool, config.seed)
    trainer = SamplerTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=ChatCollator(processor, family_of(model)),
        callbacks=[CurriculumCallback(dataset)],
        train_sampler=sampler,
    )
    resumed_from = last_checkpoint(out)
    # The first batch is drawn before any step begins: place the curriculum where training starts.
    dataset.progress = int(resumed_from.name.split("-")[1]) / max_steps if resumed_from else 0.0
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resumed_from) if resumed_from else None)
    final = out / "final"
    trainer.save_model(str(final))  # the main process only
    if trainer.accelerator.is_main_process:
        save_processor(processor, final)
    digests = rank_digests(trainer.accelerator, trainer.model)
    write_train_log(final, config, trainer, time.perf_counter() - started, resumed_from, digests)
    return final

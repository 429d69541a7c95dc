"""Qwen2.5-VL-7B's shape on one GPU: latency of full, low and AwaRes at 1 and 2 MP, batch 1 and 16,
and the peak memory and step time of the 7B LoRA configs, on random-init weights.

    python scripts/gpu_7b_shape.py [--out runs/bench/7b_shape.json]      # one GPU, bfloat16, < 10 min
    python scripts/gpu_7b_shape.py --smallest --device cpu               # the smallest case (the tests)

The model is transformers' Qwen2.5-VL with the released 7B's dimensions (``QWEN2_5_VL_7B``: the
values of its config.json) and its vocabulary size, built on the device in bfloat16; the tokenizer
and processor are the shipped base's (its ids lie inside the padded vocabulary). Random weights
answer nothing, so the AwaRes call (one quadrant) is teacher-forced by pushing its tokens to the top
of the logits (jump-forward then decodes it as it would the released checkpoint's), and every answer
is exactly ``--answer-tokens`` long (end tokens pushed down). Latencies are medians of ``--repeats``
runs after a warm-up, through ``Engine`` as a user runs it. Training runs ``--steps`` steps of
``configs/qwen2.5-vl-7b/sft.toml`` and ``grpo.toml`` (their settings, a saved copy of the random
model and synthetic trajectories at 0.45-1.6 MP) and reports peak memory and seconds per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration

from awares.crops import boxes_to_crops, extract_crops, low_res_view
from awares.curate.trajectories import ImageStore, trajectory
from awares.data import generate
from awares.jsonl import rows
from awares.models import HFBackend, TinyConfig, default_base_dir, load_processor, save_processor
from awares.models.tiny import model_config
from awares.runtime import Engine, Request, RuntimeConfig
from awares.train.grpo import GRPOConfig, train_grpo
from awares.train.sft import SFTConfig, train_sft

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "qwen2.5-vl-7b"
# Qwen2.5-VL-7B-Instruct's config.json: text 3584 x 28 layers (28 heads, 4 KV heads, MLP 18944,
# rope theta 1e6, M-RoPE sections 16/24/24), vision 1280 x 32 layers (16 heads, MLP 3420, windows of
# 112 px, full attention in blocks 7, 15, 23, 31), vocabulary 152,064.
QWEN2_5_VL_7B = TinyConfig(
    text_hidden=3584,
    text_layers=28,
    text_heads=28,
    text_kv_heads=4,
    text_intermediate=18944,
    vision_hidden=1280,
    vision_layers=32,
    vision_heads=16,
    vision_intermediate=3420,
    rope_theta=1_000_000.0,
    mrope_interleaved=False,
)
VOCAB_7B, FULL_ATTENTION_BLOCKS_7B = 152_064, [7, 15, 23, 31]
# One GPU: 1 MP and 2 MP (the processor caps the latter at 2,048 tokens, as the released evaluation does).
SIZES = {"1MP": (1176, 868), "2MP": (1680, 1204)}
SMALLEST_SIZES = {"small": (448, 336)}


def shaped_model(shape: TinyConfig, processor: Any, vocab: int, full_attention: list[int], device: str, dtype):
    """A random-init Qwen2.5-VL of ``shape`` with ``vocab`` rows of embedding, built on ``device``."""
    config = model_config(shape, processor.tokenizer)
    config.text_config.vocab_size = vocab
    config.vision_config.fullatt_block_indexes = full_attention
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model.eval()


class Steer:
    """Pushes chosen tokens up (a teacher-forced call) or down (end tokens, a call where none is
    wanted) in the logits of each forward pass; ``plan`` lists, per pass of the next turn, the
    ``(column, token): offset`` to add; ``always`` applies to every pass."""

    def __init__(self, model: torch.nn.Module, always: dict[int, float]):
        self.plan: list[dict[tuple[int, int], float]] = []
        self.always = always
        model.lm_head.register_forward_hook(self._steer)

    def _steer(self, module, args, logits):
        for token, offset in self.always.items():
            logits[..., token] += offset
        for (column, token), offset in (self.plan.pop(0) if self.plan else {}).items():
            logits[:, column, token] += offset
        return logits


def timed(call, repeats: int, device: str) -> float:
    """Median wall seconds of ``call()`` over ``repeats`` runs after one warm-up."""
    seconds = []
    for run in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        began = time.perf_counter()
        call()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if run:
            seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def latency(backend: HFBackend, sizes: dict, batches: list[int], answer_tokens: int, repeats: int, device: str):
    """Median seconds of full, low and AwaRes (call teacher-forced) per image size and batch size."""
    grammar = backend.grammar
    steer = Steer(backend.model, {end: -1e4 for end in backend.eos_ids})
    no_call = {(-1, grammar.prefix[0]): -1e4}
    call = [  # the passes of a one-crop call under jump-forward: its first token, the crop id, then close
        {(-1, grammar.prefix[0]): 1e4},
        {(-1, grammar.crop_tokens["0"]): 1e4},
        {(-1 - len(grammar.separator), grammar.close[0]): 1e4},
        no_call,  # turn 2's first pass answers
    ]
    rng = np.random.default_rng(0)
    table = {}
    for name, (width, height) in sizes.items():
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for batch in batches:
            engine = Engine(backend, RuntimeConfig(max_new_tokens=answer_tokens, batch_size=batch))
            requests = [Request(image, "What is written in the top-left corner?")] * batch
            row = {}
            for policy, plan in (("full", [no_call]), ("low", [no_call]), ("crops", call)):

                def run(policy=policy, plan=plan, engine=engine, requests=requests):
                    steer.plan = [dict(p) for p in plan]
                    return engine.answer_batch(requests, policy)

                row[f"{policy}_s"] = timed(run, repeats, device)
                results = run()
                assert all(r.crops == (("0",) if policy == "crops" else ()) for r in results), results[0].turns
            row["rtr_crops"] = results[0].rtr
            row["crops_over_full"] = row["crops_s"] / row["full_s"]
            row["low_over_full"] = row["low_s"] / row["full_s"]
            table[f"{name} batch {batch}"] = row
            print(name, batch, json.dumps(row), flush=True)
    steer.plan, steer.always = [], {}
    return table


def trajectories(root: Path, n: int, split: str) -> Path:
    """``n`` trajectories of the synthetic benchmark with the oracle's crops and the true answers."""
    store, lines = ImageStore(root), []
    for sample in generate(split, n, detail_fraction=0.5):
        image = sample.image
        crops = boxes_to_crops(sample.evidence, *image.size).crop_ids if sample.kind == "detail" else ()
        row = {"id": sample.id, "label": "crop" if crops else "direct", "image": store.put(image)}
        row |= {"question": sample.question, "answers": sample.answers}
        view, answer = low_res_view(image), sample.answers[0]
        row |= trajectory(store, view, sample.question, answer, extract_crops(image, crops) or None, crops)
        lines.append(json.dumps(row))
    path = root / "trajectories.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def peak(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def sft_seconds_per_step(out: Path, steps: int) -> float:
    log = json.loads((out / "final" / "train_log.json").read_text())
    return next(e["train_runtime"] for e in log["log_history"] if "train_runtime" in e) / steps


def grpo_seconds_per_step(out: Path, steps: int) -> float:
    return statistics.fmean(r["seconds"] for r in rows(out / "log.jsonl") if "seconds" in r)


STAGES = {
    "sft": (SFTConfig, train_sft, sft_seconds_per_step),
    "grpo": (GRPOConfig, train_grpo, grpo_seconds_per_step),
}


def training(model_dir: Path, data: Path, root: Path, steps: int, device: str, overrides: dict) -> dict:
    """Peak memory and seconds per step of ``steps`` steps of the 7B SFT and GRPO configs."""
    report = {}
    for stage, (config_class, train, seconds_per_step) in STAGES.items():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        out = root / stage
        settings = {"data": str(data), "model": str(model_dir), "output_dir": str(out), "max_steps": steps}
        train(config_class.load(CONFIGS / f"{stage}.toml", **settings, save_steps=10**6, **overrides.get(stage, {})))
        report[stage] = {"steps": steps, "seconds_per_step": seconds_per_step(out, steps), "peak_gib": peak(device)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smallest", action="store_true", help="a tiny shape, one small image, batch 1 and 2")
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="training steps of each 7B config")
    parser.add_argument("--no-training", action="store_true")
    parser.add_argument("--out", default="runs/bench/7b_shape.json")
    args = parser.parse_args()

    processor = load_processor(default_base_dir())
    if args.smallest:
        shape, vocab, full_attention = replace(TinyConfig(), text_layers=2), len(processor.tokenizer) + 64, [1]
        sizes, batches, dtype = SMALLEST_SIZES, [1, 2], torch.float32
        overrides = {  # the configs' settings at a size a CPU runs in seconds
            "sft": {
                "dtype": "float32",
                "gradient_checkpointing": False,
                "batch_size": 1,
                "gradient_accumulation_steps": 2,
            },
            "grpo": {
                "dtype": "float32",
                "gradient_checkpointing": False,
                "prompts_per_step": 1,
                "num_generations": 2,
                "micro_batch_size": 2,
                "rollout_batch_size": 2,
                "max_new_tokens": 8,
            },
        }
    else:
        shape, vocab, full_attention = QWEN2_5_VL_7B, VOCAB_7B, FULL_ATTENTION_BLOCKS_7B
        sizes, batches, dtype, overrides = SIZES, [1, 16], torch.bfloat16, {}
    began = time.perf_counter()
    model = shaped_model(shape, processor, vocab, full_attention, args.device, dtype)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype),
        "build_s": time.perf_counter() - began,
    }
    backend = HFBackend(model, processor)
    report["latency_s"] = latency(backend, sizes, batches, args.answer_tokens, args.repeats, args.device)
    report["latency_peak_gib"] = peak(args.device)
    if not args.no_training:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            model.save_pretrained(root / "model")
            save_processor(processor, root / "model")
            del backend, model
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            data = trajectories(root / "data", 8 if args.smallest else 64, "test" if args.smallest else "xlarge")
            report["training"] = training(root / "model", data, root, args.steps, args.device, overrides)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

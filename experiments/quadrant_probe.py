"""Localisation probe: can the tiny Qwen2.5-VL learn *where* the plate is from the 0.5x view?

Fine-tunes a tiny model on "which crop holds the plate?" as a classification over the crop-id
tokens at the position where the policy would write its call, on detail samples of the synthetic
benchmark (turn-1 format: system prompt, low-res view, question), and prints held-out accuracy
(``--n-eval`` test-split images) every ``--eval-every`` steps. ``--classes quadrants`` keeps plates
that lie inside one quadrant (4 classes, chance 25%); ``--classes crops`` is the policy's real choice,
the cheapest cover among crops 0-8 (9 classes, chance 11%). ``lr=``/``tb=`` are left/right and
top/bottom accuracy on quadrant predictions. Results as JSON with ``--out``; docs/experiments/localisation.md
has the measured runs and their commands.

    python experiments/quadrant_probe.py --classes quadrants --threads 1
    python experiments/quadrant_probe.py --classes quadrants --mrope split --threads 1
    python experiments/quadrant_probe.py --classes crops --init runs/pipeline/base/final --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText

from awares.crops import low_res_view
from awares.data.synthetic import SPLIT_OFFSETS, corpus, make_sample
from awares.models import TinyConfig, load_processor
from awares.models.tiny import build_model, build_processor
from awares.protocol import SYSTEM_PROMPT, turn1_messages


def samples(split: str, classes: str, start: int = 0) -> Iterator[tuple]:
    """(low-res view, question, target crop id) of the detail samples of ``split``, from seed ``start`` on."""
    for seed in itertools.count(SPLIT_OFFSETS[split] + start):
        s = make_sample(seed, detail_fraction=1.0)
        if classes == "crops" or s.meta["target"] in "0123":
            yield low_res_view(s.image), s.question, s.meta["target"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", choices=["quadrants", "crops"], default="quadrants")
    p.add_argument("--init", default="", help="checkpoint to start from (default: a random-init tiny model)")
    p.add_argument("--mrope", choices=["interleaved", "split"], default="interleaved", help="random init only")
    p.add_argument(
        "--center-filters",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        help="random init only: share of the patch filters made zero-mean (no value: all)",
    )
    p.add_argument("--filter-mean", type=float, default=0.0, help="random init only: share of their mean kept")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-at", type=float, default=1.01, help="stop once held-out accuracy reaches this")
    p.add_argument("--out", default="", help="write the run's arguments and history here as JSON")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    if a.init:
        processor = load_processor(a.init)
        model = AutoModelForImageTextToText.from_pretrained(a.init, dtype=torch.float32)
    else:
        config = TinyConfig(
            extra_corpus=corpus(),
            seed=a.seed,
            mrope_interleaved=a.mrope == "interleaved",
            center_patch_filters=a.center_filters,
            patch_filter_mean=a.filter_mean,
        )
        processor = build_processor(config)
        model = build_model(config, processor.tokenizer)
    model.train()
    labels = "0123" if a.classes == "quadrants" else "012345678"
    candidates = [processor.tokenizer.convert_tokens_to_ids(c) for c in labels]

    def logits(items: list[tuple]) -> torch.Tensor:
        texts = [
            processor.apply_chat_template(
                turn1_messages(v, q, SYSTEM_PROMPT), tokenize=False, add_generation_prompt=True
            )
            for v, q, _ in items
        ]
        batch = processor(text=texts, images=[v for v, _, _ in items], padding=True, return_tensors="pt")
        return model(**batch, logits_to_keep=1).logits[:, -1, candidates]

    held_out = list(itertools.islice(samples("test", a.classes), a.n_eval))
    train = samples("train", a.classes, a.seed * 1_000_000)  # --seed: model init and training stream

    def evaluate() -> tuple[float, str]:
        model.eval()
        with torch.no_grad():
            preds = [labels[i] for k in range(0, len(held_out), 25) for i in logits(held_out[k : k + 25]).argmax(-1)]
        model.train()
        gold = [t for _, _, t in held_out]
        acc = sum(p_ == g for p_, g in zip(preds, gold)) / len(gold)
        quads = [(p_, g) for p_, g in zip(preds, gold) if p_ in "0123" and g in "0123"]
        lr = sum(int(p_) % 2 == int(g) % 2 for p_, g in quads) / max(len(quads), 1)
        tb = sum(int(p_) // 2 == int(g) // 2 for p_, g in quads) / max(len(quads), 1)
        return acc, f"preds={dict(sorted(Counter(preds).items()))} lr={lr:.2f} tb={tb:.2f}"

    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 30))
    started, history = time.perf_counter(), []
    for step in range(1, a.steps + 1):
        items = list(itertools.islice(train, a.batch))
        target = torch.tensor([labels.index(t) for _, _, t in items])
        loss = torch.nn.functional.cross_entropy(logits(items), target)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % a.eval_every == 0 or step == a.steps:
            acc, detail = evaluate()
            seconds = round(time.perf_counter() - started)
            history.append({"step": step, "seconds": seconds, "loss": round(loss.item(), 3), "accuracy": acc})
            print(f"step {step} t={seconds}s loss={loss.item():.3f} acc={acc:.3f} {detail}", flush=True)
            if acc >= a.stop_at:
                break
    result = {"args": vars(a), "history": history, "best": max(h["accuracy"] for h in history)}
    print("RESULT", json.dumps(result))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Multi-turn GRPO on the real protocol: correctness minus crop cost, loss on policy tokens only.

Why a compact loop on accelerate and not TRL's ``GRPOTrainer``: a rollout here is two model turns
around an environment step that inserts *images* (the crops) into the conversation, reusing the
turn-1 KV cache. TRL's trainer samples one completion per prompt; its tool-calling path returns text
from tools, not images placed in a user turn of a Qwen2.5-VL conversation. So the rollouts come from
the runtime ``Engine`` itself (sampling, the same parser and crop execution as at inference), and
the loss re-scores each finished conversation with ``ChatCollator``'s assistant mask: the tokens
the policy generated (call and answer) are actions; system, user, crop images and padding are not.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from PIL import Image
from transformers import AutoModelForImageTextToText, set_seed

from ..errors import ConfigError, InputError
from ..images import load_image
from ..jsonl import append, open_append, rows
from ..models import HFBackend, Sampling, load_processor, model_dir
from ..models.families import family_of
from ..models.processor import save_processor
from ..protocol import Message
from ..runtime import Engine, Request, Result, RuntimeConfig
from .collate import IGNORE_INDEX, ChatCollator
from .common import load_trainable, per_process, plain, rank_digests
from .config import GRPOConfig
from .rewards import CorrectnessReward, CropCostReward, EvidenceReward, FormatReward
from .select import StepScorer, best_step, step_scores


@dataclass
class Rollout:
    """One sampled trajectory and what the rewards need to know about it."""

    messages: list[Message]
    result: Result
    crop_area: float


class PromptSet:
    """Curated trajectories used as prompts; ``sample`` draws a step's prompts deterministically."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"prompt file {path} does not exist")
        self.rows = [r for r in rows(path) if r.get("image") and r.get("question") and r.get("answers")]
        if not self.rows:
            raise InputError(f"no usable prompts (image, question, answers) in {path}")
        self.root = path.parent

    def sample(self, n: int, seed: int, balance: bool) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        pools = [[r for r in self.rows if r.get("label") == tag] for tag in ("crop", "direct")]
        if not balance or not all(pools):
            return rng.sample(self.rows, min(n, len(self.rows)))
        return [rng.choice(pools[i % 2]) for i in range(n)]

    def image(self, row: dict[str, Any]) -> Image.Image:
        path = Path(row["image"])
        return load_image(path if path.is_absolute() else self.root / path)


def rollout(engine: Engine, prompts: list[tuple[Image.Image, str]], group_size: int) -> list[Rollout]:
    """``group_size`` sampled protocol runs per prompt (consecutive), each with its final conversation."""
    requests = [Request(image, question) for image, question in prompts for _ in range(group_size)]
    results = engine.answer_batch(requests, "crops")
    return [Rollout(r.messages, r, r.crop_pixels / (r.image_size[0] * r.image_size[1])) for r in results]


def call_rate(results: list[Result]) -> float | None:
    """Share of rollouts that called the tool (None when there are none): the collapse watch."""
    return sum(len(r.turns) > 1 for r in results) / len(results) if results else None


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(R - group mean) / (group std + eps) for consecutive groups of ``group_size``."""
    groups = rewards.view(-1, group_size)
    return ((groups - groups.mean(dim=1, keepdim=True)) / (groups.std(dim=1, keepdim=True) + eps)).view(-1)


def token_logprobs(
    model: Any, batch: dict[str, torch.Tensor], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of each next token under the sampling distribution (logits / ``temperature``,
    as the rollouts drew them) and the action mask (policy-generated tokens)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float() / temperature
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logprobs, mask.float()


def reference_logprobs(
    policy: Any, reference: Any, batches: list[dict[str, torch.Tensor]], temperature: float = 1.0
) -> list[torch.Tensor]:
    """Log-probs under the frozen reference: ``reference``, or when it is None (LoRA) the policy
    with its adapter switched off."""
    with torch.no_grad():
        if reference is not None:
            return [token_logprobs(reference, b, temperature)[0] for b in batches]
        with policy.disable_adapter():
            return [token_logprobs(policy, b, temperature)[0] for b in batches]


def policy_loss(
    new: torch.Tensor,
    old: torch.Tensor,
    ref: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_epsilon: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clipped GRPO objective plus ``beta`` x KL (k3 estimator) to the reference, averaged over
    each trajectory's action tokens, then over trajectories. Returns (loss, mean KL)."""
    ratio = torch.exp(new - old)
    adv = advantages.unsqueeze(1)
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * adv)
    kl = torch.exp(ref - new) - (ref - new) - 1
    lengths = mask.sum(dim=1).clamp(min=1)
    loss = (((-surrogate + beta * kl) * mask).sum(dim=1) / lengths).mean()
    return loss, ((kl * mask).sum(dim=1) / lengths).mean().detach()


def score(rollouts: list[Rollout], prompts: list[dict[str, Any]], group_size: int, config: GRPOConfig):
    """Per-function rewards and their sum for each rollout."""
    expand = [p for p in prompts for _ in range(group_size)]
    columns = {
        "answers": [p["answers"] for p in expand],
        "question": [p["question"] for p in expand],
        "label": [p.get("label", "direct") for p in expand],
        "crops": [r.result.crops for r in rollouts],
        "crop_area": [r.crop_area for r in rollouts],
        "extra_tokens": [r.result.tokens.crops / r.result.tokens.full for r in rollouts],
        "parse_status": [r.result.parse_status for r in rollouts],
        "boxes": [p.get("boxes") for p in expand],
        "image_size": [r.result.image_size for r in rollouts],
    }
    functions = {
        "correct": CorrectnessReward(),
        "cost": CropCostReward(config.miss_penalty, config.call_cost, config.area_cost, config.cost_mode),
        "format": FormatReward(config.format_bonus),
    }
    if config.evidence_penalty:
        functions["evidence"] = EvidenceReward(config.evidence_penalty)
    completions = [r.result.answer for r in rollouts]
    parts = {name: torch.tensor(f(completions, **columns)) for name, f in functions.items()}
    return parts, sum(parts.values())


def _checkpoint(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step}"


def _saved_steps(out: Path) -> list[int]:
    """The steps whose state is saved whole under ``out/checkpoints`` (``step-N`` holding the model,
    optimizer and random state ``accelerator.save_state`` writes), in order: a stray folder
    (``step-1.bak``) or one an interrupted save left short is passed over."""
    steps = (p for p in (out / "checkpoints").glob("step-*") if p.name.removeprefix("step-").isdigit())
    return sorted(int(p.name.removeprefix("step-")) for p in steps if _complete(p))


def _complete(checkpoint: Path) -> bool:
    weights = [*checkpoint.glob("model*.safetensors"), *checkpoint.glob("pytorch_model*.bin")]
    return bool(weights) and (checkpoint / "optimizer.bin").is_file() and any(checkpoint.glob("random_states*"))


def _resume(out: Path, accelerator: Accelerator) -> int:
    saved = _saved_steps(out)
    if not saved:
        return 0
    accelerator.load_state(str(_checkpoint(out, saved[-1])))
    return saved[-1]


def train_grpo(config: GRPOConfig) -> Path:
    """Train the policy; log one JSON line per step to ``output_dir/log.jsonl``; save ``final``."""
    set_seed(config.seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    prompts = PromptSet(config.data)
    if config.evidence_penalty and not any(r.get("boxes") for r in prompts.rows):
        raise ConfigError(
            f"evidence_penalty needs the oracle's boxes in the prompt rows (`boxes`); {config.data} has none: "
            "re-run `awares curate` with the same --out to merge them in"
        )
    source = model_dir(config.model)
    processor = load_processor(source)
    policy = load_trainable(source, config)
    reference = None
    if not config.lora:
        reference = AutoModelForImageTextToText.from_pretrained(source, dtype=config.torch_dtype()).eval()
        reference.requires_grad_(False).to(accelerator.device)
    trained = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=0.0)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    runtime = RuntimeConfig(
        max_new_tokens=config.max_new_tokens,
        batch_size=config.rollout_batch_size,
        sampling=Sampling(temperature=config.temperature),
        on_malformed=config.on_malformed,
    )
    engine = Engine(HFBackend(accelerator.unwrap_model(policy), processor), runtime)
    collator = ChatCollator(processor, family_of(policy))
    out = Path(config.output_dir)
    start = _resume(out, accelerator)
    log_file = out / "log.jsonl"
    main = accelerator.is_main_process
    scorer = None
    if config.eval_data and main:
        scorer = StepScorer(config.eval_data, out / "eval", config.max_new_tokens, config.eval_batch_size)
        if start:
            scorer(accelerator.unwrap_model(policy), processor, start)  # finishes a score cut short
    if main:
        kept = [r for r in rows(log_file) if r.get("step", 0) <= start]  # steps after the last save are redone
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("".join(json.dumps(r) + "\n" for r in kept))
    accelerator.wait_for_everyone()
    share = per_process(config.prompts_per_step, "prompts_per_step")  # each process rolls out its share
    if len(prompts.rows) < config.prompts_per_step:
        raise ConfigError(f"prompts_per_step = {config.prompts_per_step} is more than the {len(prompts.rows)} prompts")
    began = time.perf_counter()
    with open_append(log_file) if main else nullcontext() as log:
        for step in range(start + 1, config.max_steps + 1):
            t0 = time.perf_counter()
            drawn = prompts.sample(config.prompts_per_step, config.seed * 100_003 + step, config.balance_labels)
            rank = accelerator.process_index
            batch_prompts = drawn[rank * share : (rank + 1) * share]
            policy.eval()
            pairs = [(prompts.image(p), p["question"]) for p in batch_prompts]
            rollouts = rollout(engine, pairs, config.group_size)
            parts, rewards = score(rollouts, batch_prompts, config.group_size, config)
            advantages = group_advantages(rewards, config.group_size).to(accelerator.device)
            loss_value, kl_value = _update(
                policy, reference, optimizer, accelerator, collator, rollouts, advantages, config
            )
            results = [r.result for r in rollouts]
            labels = [p.get("label", "direct") for p in batch_prompts for _ in range(config.group_size)]
            by_label = {t: [r for r, tag in zip(results, labels) if tag == t] for t in ("crop", "direct")}
            row = {
                "step": step,
                "reward": rewards.mean().item(),
                **{f"reward_{k}": v.mean().item() for k, v in parts.items()},
                "accuracy": parts["correct"].mean().item(),
                "call_rate": call_rate(results),
                **{f"call_rate_{t}": call_rate(chosen) for t, chosen in by_label.items()},
                "rtr": sum(r.rtr for r in results) / len(results),
                "kl": kl_value,
                "loss": loss_value,
                "seconds": time.perf_counter() - t0,
            }
            row = _mean_over_processes(accelerator, row)
            if main:
                append(log, row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if step % config.save_steps == 0 or step == config.max_steps:
                accelerator.save_state(str(_checkpoint(out, step)))
                if scorer:
                    scorer(accelerator.unwrap_model(policy), processor, step)
                accelerator.wait_for_everyone()
    chosen = _choose_step(out, accelerator, config)
    final = out / "final"
    digests = rank_digests(accelerator, accelerator.unwrap_model(policy))  # before LoRA is merged
    if main:
        plain(accelerator.unwrap_model(policy), config).save_pretrained(final)
        save_processor(processor, final)
        summary = {
            "config": asdict(config),
            "resumed_from_step": start,
            "seconds": time.perf_counter() - began,
            "world_size": accelerator.num_processes,
            "prompts_per_process": share,
            "rank_weight_digests": digests,
            **chosen,
        }
        (final / "train_log.json").write_text(json.dumps(summary | {"log": list(rows(log_file))}, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _choose_step(out: Path, accelerator: Accelerator, config: GRPOConfig) -> dict[str, Any]:
    """With ``eval_data``: every saved step's scores and the best step, whose weights the policy
    takes back with ``load_best_model_at_end``. What ``train_log.json`` records of them."""
    if not config.eval_data:
        return {"final_step": config.max_steps}
    scores = step_scores(out / "eval", {s for s in _saved_steps(out) if s <= config.max_steps})
    best = best_step(scores)
    final_step = best if config.load_best_model_at_end else config.max_steps
    if final_step != config.max_steps:
        accelerator.load_state(str(_checkpoint(out, final_step)))
    if accelerator.is_main_process:
        print(f"eval_data: best step {best} of {len(scores)} scored; final = step {final_step}", flush=True)
    kept = ("accuracy", "rtr", "call_rate", "evidence_hit_rate")
    return {
        "final_step": final_step,
        "best_step": best,
        "eval": {step: {k: scores[step][k] for k in kept} for step in sorted(scores)},
    }


def _mean_over_processes(accelerator: Accelerator, row: dict[str, Any]) -> dict[str, Any]:
    """A step's log row averaged over the processes (each rolled out an equal share of the prompts)."""
    if accelerator.num_processes == 1:
        return row
    from accelerate.utils import gather_object

    rows_of_all = gather_object([row])

    def mean(key: str) -> float | None:  # a rate over no samples (None) is left out
        values = [r[key] for r in rows_of_all if r[key] is not None]
        return sum(values) / len(values) if values else None

    return {k: v if k == "step" else mean(k) for k, v in row.items()}


def _update(policy, reference, optimizer, accelerator, collator, rollouts, advantages, config) -> tuple[float, float]:
    """``num_iterations`` clipped policy-gradient steps on one batch of rollouts (micro-batched)."""
    chunks = [
        range(i, min(i + config.micro_batch_size, len(rollouts)))
        for i in range(0, len(rollouts), config.micro_batch_size)
    ]
    batches = [
        {k: v.to(accelerator.device) for k, v in collator([rollouts[i].messages for i in c]).items()} for c in chunks
    ]
    t = config.temperature
    ref = reference_logprobs(accelerator.unwrap_model(policy), reference, batches, t)
    with torch.no_grad():
        # With one update per batch the rollout policy is the current one: its log-probs are the
        # detached new ones, no extra forward pass needed.
        old = [token_logprobs(policy, b, t)[0] for b in batches] if config.num_iterations > 1 else [None] * len(batches)
    policy.train()
    total_loss = total_kl = 0.0
    for _ in range(config.num_iterations):
        for chunk, batch, old_lp, ref_lp in zip(chunks, batches, old, ref):
            new, mask = token_logprobs(policy, batch, t)
            old_lp = new.detach() if old_lp is None else old_lp
            loss, kl = policy_loss(new, old_lp, ref_lp, advantages[list(chunk)], mask, config.clip_epsilon, config.beta)
            weight = len(chunk) / len(rollouts)
            accelerator.backward(loss * weight)
            total_loss += loss.item() * weight / config.num_iterations
            total_kl += kl.item() * weight / config.num_iterations
        accelerator.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    return total_loss, total_kl

"""Multi-turn GRPO on the real protocol: correctness minus crop cost, loss on policy tokens only.

Why a compact loop on accelerate and not TRL's ``GRPOTrainer``: a rollout here is two model turns
around an environment step that inserts *images* (the crops) into a user turn of the conversation,
reusing the turn-1 KV cache. TRL 1.16's trainer has tools that return images, but through the chat
template's tool support, which Qwen2.5-VL's template (the released checkpoint's) does not have, and
its vLLM rollouts with images have open bugs (TRL #6294, #6401). So the rollouts come from the
runtime ``Engine`` itself (``train/rollouts.py``: the same sampling, parser and crops as at inference), and
the loss re-scores each finished conversation with ``ChatCollator``'s assistant mask: the tokens
the policy generated (call and answer) are actions; system, user, crop images and padding are not.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import AutoModelForImageTextToText, get_scheduler, set_seed

from ..errors import ConfigError
from ..jsonl import append, open_append, rows
from ..models import HFBackend, Sampling, load_processor, model_dir
from ..models.families import family_of
from ..models.processor import save_processor
from ..runtime import Engine, RuntimeConfig
from .collate import IGNORE_INDEX, ChatCollator
from .common import load_trainable, per_process, plain, rank_digests
from .config import GRPOConfig
from .rollouts import PromptSet, Rollout, call_rate, rollout, score
from .select import StepScorer, best_step, step_scores


def group_advantages(rewards: torch.Tensor, num_generations: int, eps: float = 1e-4) -> torch.Tensor:
    """(R - group mean) / (group std + eps) for consecutive groups of ``num_generations``."""
    groups = rewards.view(-1, num_generations)
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
    epsilon: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clipped GRPO objective plus ``beta`` x KL (k3 estimator) to the reference, averaged over
    each trajectory's action tokens, then over trajectories. Returns (loss, mean KL)."""
    ratio = torch.exp(new - old)
    adv = advantages.unsqueeze(1)
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    kl = torch.exp(ref - new) - (ref - new) - 1
    lengths = mask.sum(dim=1).clamp(min=1)
    loss = (((-surrogate + beta * kl) * mask).sum(dim=1) / lengths).mean()
    return loss, ((kl * mask).sum(dim=1) / lengths).mean().detach()


CHECKPOINT_PREFIX = "checkpoint-"  # the Trainer's layout, as the base and SFT stages save


def _checkpoint(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"{CHECKPOINT_PREFIX}{step}"


def _saved_steps(out: Path) -> list[int]:
    """The steps whose state is saved whole under ``out/checkpoints`` (``checkpoint-N`` holding the
    model, optimizer and random state ``accelerator.save_state`` writes), in order: a stray folder
    (``checkpoint-1.bak``) or one an interrupted save left short is passed over."""
    folders = (out / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*")
    steps = (p for p in folders if p.name.removeprefix(CHECKPOINT_PREFIX).isdigit())
    return sorted(int(p.name.removeprefix(CHECKPOINT_PREFIX)) for p in steps if _complete(p))


def _complete(checkpoint: Path) -> bool:
    weights = [*checkpoint.glob("model*.safetensors"), *checkpoint.glob("pytorch_model*.bin")]
    return bool(weights) and (checkpoint / "optimizer.bin").is_file() and any(checkpoint.glob("random_states*"))


def _prune(out: Path, limit: int, keep: set[int]) -> None:
    """Delete all but the newest ``limit`` saved steps (0: keep every one) and those in ``keep``, as
    the Trainer's ``save_total_limit`` does (it keeps the best step too)."""
    saved = _saved_steps(out)
    if limit:
        for step in saved[:-limit]:
            if step not in keep:
                shutil.rmtree(_checkpoint(out, step))


@dataclass
class _Run:
    """What a GRPO run holds from its setup to its end: the policy, its reference (None: the policy
    with its LoRA adapter off, or no KL term), the optimizer and schedule, the rollout engine."""

    config: GRPOConfig
    accelerator: Accelerator
    prompts: PromptSet
    processor: Any
    policy: Any
    reference: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    engine: Engine
    collator: ChatCollator
    out: Path
    start: int  # the last step done before this run (resumed from)
    scorer: StepScorer | None
    share: int  # prompts each process rolls out per step

    @property
    def log_file(self) -> Path:
        return self.out / "log.jsonl"


def train_grpo(config: GRPOConfig) -> Path:
    """Train the policy; log one JSON line per step to ``output_dir/log.jsonl``; save ``final``."""
    set_seed(config.seed)
    run = _setup(config)
    main = run.accelerator.is_main_process
    began = time.perf_counter()
    with open_append(run.log_file) if main else nullcontext() as log:
        for step in range(run.start + 1, config.max_steps + 1):
            row = _mean_over_processes(run.accelerator, _step(run, step))
            if main:
                append(log, row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if step % config.save_steps == 0 or step == config.max_steps:
                _save(run, step)
    return _finish(run, began)


def _setup(config: GRPOConfig) -> _Run:
    """Load the prompts, the policy and its reference; resume from the last complete checkpoint."""
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    prompts = PromptSet(config.data)
    if config.evidence_penalty and not any(r.get("boxes") for r in prompts.rows):
        raise ConfigError(
            f"evidence_penalty needs the oracle's boxes in the prompt rows (`boxes`); {config.data} has none: "
            "re-run `awares curate` with the same --out to merge them in"
        )
    share = per_process(config.prompts_per_step, "prompts_per_step")  # each process rolls out its share
    if len(prompts.rows) < config.prompts_per_step:
        raise ConfigError(f"prompts_per_step = {config.prompts_per_step} is more than the {len(prompts.rows)} prompts")
    source = model_dir(config.model)
    processor = load_processor(source)
    policy = load_trainable(source, config)
    reference = None
    if config.beta and not config.lora:  # at beta 0 there is no KL term, so no reference pass
        reference = AutoModelForImageTextToText.from_pretrained(source, dtype=config.torch_dtype()).eval()
        reference.requires_grad_(False).to(accelerator.device)
    trained = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=0.0)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    updates = config.max_steps * config.num_iterations  # the schedule steps with the optimizer
    scheduler = get_scheduler(config.lr_scheduler_type, optimizer, math.ceil(config.warmup_ratio * updates), updates)
    accelerator.register_for_checkpointing(scheduler)  # one step per optimizer step, on every process
    runtime = RuntimeConfig(
        max_new_tokens=config.max_new_tokens,
        batch_size=config.rollout_batch_size,
        sampling=Sampling(temperature=config.temperature),
        on_malformed=config.on_malformed,
    )
    engine = Engine(HFBackend(accelerator.unwrap_model(policy), processor), runtime)
    out = Path(config.output_dir)
    saved = _saved_steps(out)
    start = saved[-1] if saved else 0
    if start:
        accelerator.load_state(str(_checkpoint(out, start)))
    scorer = None
    if config.eval_data and accelerator.is_main_process:
        scorer = StepScorer(config.eval_data, out / "eval", config.max_new_tokens, config.eval_batch_size)
        if start:
            scorer(accelerator.unwrap_model(policy), processor, start)  # finishes a score cut short
    run = _Run(config, accelerator, prompts, processor, policy, reference, optimizer, scheduler, engine,
               ChatCollator(processor, family_of(policy)), out, start, scorer, share)  # fmt: skip
    if accelerator.is_main_process:
        kept = [r for r in rows(run.log_file) if r.get("step", 0) <= start]  # steps after the last save are redone
        out.mkdir(parents=True, exist_ok=True)
        run.log_file.write_text("".join(json.dumps(r) + "\n" for r in kept))
    accelerator.wait_for_everyone()
    return run


def _step(run: _Run, step: int) -> dict[str, Any]:
    """One GRPO step: this process's share of the step's prompts, ``num_generations`` rollouts each,
    their rewards and group advantages, the update; the step's log row (TRL's names where they mean
    the same: ``reward_std``, ``frac_reward_zero_std``)."""
    config, accelerator = run.config, run.accelerator
    t0 = time.perf_counter()
    share = run.share
    drawn = run.prompts.sample(config.prompts_per_step, config.seed * 100_003 + step, config.balance_labels)
    rank = accelerator.process_index
    batch_prompts = drawn[rank * share : (rank + 1) * share]
    run.policy.eval()
    pairs = [(run.prompts.image(p), p["question"]) for p in batch_prompts]
    rollouts = rollout(run.engine, pairs, config.num_generations)
    parts, rewards = score(rollouts, batch_prompts, config.num_generations, config)
    advantages = group_advantages(rewards, config.num_generations).to(accelerator.device)
    learning_rate = run.scheduler.get_last_lr()[0]
    loss_value, kl_value = _update(run, rollouts, advantages)
    results = [r.result for r in rollouts]
    labels = [p.get("label", "direct") for p in batch_prompts for _ in range(config.num_generations)]
    by_label = {t: [r for r, tag in zip(results, labels) if tag == t] for t in ("crop", "direct")}
    groups = rewards.view(-1, config.num_generations)
    return {
        "step": step,
        "reward": rewards.mean().item(),
        "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "frac_reward_zero_std": (groups.std(dim=1) < 1e-6).float().mean().item(),  # groups that teach nothing
        **{f"reward_{k}": v.mean().item() for k, v in parts.items()},
        "accuracy": parts["correct"].mean().item(),
        "call_rate": call_rate(results),
        **{f"call_rate_{t}": call_rate(chosen) for t, chosen in by_label.items()},
        "rtr": sum(r.rtr for r in results) / len(results),
        "kl": kl_value,
        "loss": loss_value,
        "learning_rate": learning_rate,
        "seconds": time.perf_counter() - t0,
    }


def _save(run: _Run, step: int) -> None:
    """Save the step's state (``checkpoint-N``), score it on ``eval_data``, prune old checkpoints."""
    run.accelerator.save_state(str(_checkpoint(run.out, step)))
    keep: set[int] = set()
    if run.scorer:
        run.scorer(run.accelerator.unwrap_model(run.policy), run.processor, step)
        scored = step_scores(run.out / "eval", set(_saved_steps(run.out)))
        keep = {best_step(scored)} if scored else set()
    if run.accelerator.is_main_process:
        _prune(run.out, run.config.save_total_limit, keep)
    run.accelerator.wait_for_everyone()


def _finish(run: _Run, began: float) -> Path:
    """``final``: the last (or, with ``load_best_model_at_end``, the best scored) step's policy, plain
    (LoRA merged), with its processor and ``train_log.json``."""
    config, accelerator = run.config, run.accelerator
    chosen = _choose_step(run.out, accelerator, config)
    final = run.out / "final"
    digests = rank_digests(accelerator, accelerator.unwrap_model(run.policy))  # before LoRA is merged
    if accelerator.is_main_process:
        plain(accelerator.unwrap_model(run.policy), config).save_pretrained(final)
        save_processor(run.processor, final)
        summary = {
            "config": asdict(config),
            "resumed_from_step": run.start,
            "seconds": time.perf_counter() - began,
            "world_size": accelerator.num_processes,
            "prompts_per_process": run.share,
            "rank_weight_digests": digests,
            **chosen,
        }
        (final / "train_log.json").write_text(json.dumps(summary | {"log": list(rows(run.log_file))}, indent=2))
    accelerator.wait_for_everyone()  # the command line ends the process group (awares.cli)
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


def _update(run: _Run, rollouts: list[Rollout], advantages: torch.Tensor) -> tuple[float, float]:
    """``num_iterations`` clipped policy-gradient steps on one batch of rollouts (micro-batched), each
    followed by a step of the learning-rate schedule. Returns the mean loss and KL."""
    config, accelerator, policy = run.config, run.accelerator, run.policy
    size = config.micro_batch_size
    chunks = [range(i, min(i + size, len(rollouts))) for i in range(0, len(rollouts), size)]
    batches = [
        {k: v.to(accelerator.device) for k, v in run.collator([rollouts[i].messages for i in c]).items()}
        for c in chunks
    ]
    t = config.temperature
    # At beta 0 the KL term is zero whatever the reference says: no reference pass (TRL skips it too).
    ref = reference_logprobs(accelerator.unwrap_model(policy), run.reference, batches, t) if config.beta else None
    with torch.no_grad():
        # With one update per batch the rollout policy is the current one: its log-probs are the
        # detached new ones, no extra forward pass needed.
        old = [token_logprobs(policy, b, t)[0] for b in batches] if config.num_iterations > 1 else [None] * len(batches)
    policy.train()
    total_loss = total_kl = 0.0
    for _ in range(config.num_iterations):
        for index, (chunk, batch, old_lp) in enumerate(zip(chunks, batches, old)):
            new, mask = token_logprobs(policy, batch, t)
            old_lp = new.detach() if old_lp is None else old_lp
            ref_lp = new.detach() if ref is None else ref[index]
            loss, kl = policy_loss(new, old_lp, ref_lp, advantages[list(chunk)], mask, config.epsilon, config.beta)
            weight = len(chunk) / len(rollouts)
            accelerator.backward(loss * weight)
            total_loss += loss.item() * weight / config.num_iterations
            total_kl += kl.item() * weight / config.num_iterations
        accelerator.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
    return total_loss, total_kl

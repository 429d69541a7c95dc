import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText

from awares.data import DATA_FILE, write_dataset
from awares.data.synthetic import generate
from awares.errors import ConfigError, InputError
from awares.models import load_processor
from awares.runtime import Engine, RuntimeConfig
from awares.train.collate import ChatCollator
from awares.train.common import WeightOptions, load_trainable, plain
from awares.train.grpo import GRPOConfig, group_advantages, policy_loss, reference_logprobs, token_logprobs, train_grpo
from awares.train.rewards import CorrectnessReward, CropCostReward, EvidenceReward, FormatReward
from awares.train.rollouts import rollout, score
from awares.train.select import StepScorer, best_step

from .conftest import Scripted, scene


def test_correctness_reward_uses_the_judge():
    out = CorrectnessReward()(["Red.", "blue", "3"], answers=[["red"], ["red"], ["3"]], question=["q"] * 3)
    assert out == [1.0, 0.0, 1.0]


def test_crop_cost_follows_the_paper_and_its_variants():
    kw = {
        "label": ["crop", "direct", "crop", "direct"],
        "crops": [(), (), ("0",), ("0", "4")],
        "crop_area": [0.0, 0.0, 0.25, 0.5],
        "extra_tokens": [0.0, 0.0, 0.25, 0.5],
    }
    assert CropCostReward()(["a"] * 4, **kw) == pytest.approx([-2.0, 0.0, -0.5, -0.75])  # area in percent x 0.01
    assert CropCostReward(call_cost=0.1, area_cost=0.2, mode="per-crop")(["a"] * 4, **kw)[2:] == pytest.approx(
        [-0.3, -0.5]
    )
    assert CropCostReward(call_cost=0.0, area_cost=1.0, mode="tokens")(["a"] * 4, **kw)[2:] == pytest.approx(
        [-0.25, -0.5]
    )
    assert FormatReward(0.1)(["a"] * 3, parse_status=["answer", "call", "malformed"]) == [0.1, 0.1, -0.1]


def test_the_default_cost_makes_the_whole_image_clearly_dearer_than_a_quadrant():
    kw = {"label": ["crop"] * 2, "crops": [("0",), ("all",)], "crop_area": [0.25, 1.0], "extra_tokens": [0.25, 1.0]}
    quadrant, whole = CropCostReward()(["a"] * 2, **kw)
    assert quadrant - whole == pytest.approx(0.75) and quadrant == pytest.approx(-0.5)


def test_evidence_reward_penalises_calls_that_clip_the_oracle_box():
    plate = [(252, 112, 336, 196)]  # 84 px, 28 of them left of the vertical midline of a 560 x 448 image
    kw = {
        "crops": [("0",), ("5",), ("4",), (), ("0", "1"), ("3",)],
        "boxes": [plate, plate, plate, plate, plate, None],
        "image_size": [(560, 448)] * 6,
    }
    # quadrant 0 holds a third of the plate, the top half and the centre all of it, two quadrants
    # together all of it; an answer without a call and a sample without boxes pay nothing
    assert EvidenceReward(0.5)(["a"] * 6, **kw) == [-0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert EvidenceReward(0.5, min_coverage=0.3)(["a"] * 6, **kw)[0] == 0.0


def test_the_evidence_term_is_scored_only_when_asked_for(backend):
    image = scene()
    prompt = {"question": "q", "answers": ["red"], "label": "crop", "boxes": [(0, 0, 8, 8)]}
    rollouts = rollout(Engine(backend, RuntimeConfig(max_new_tokens=4)), [(image, "q")], 2)
    assert "evidence" not in score(rollouts, [prompt], 2, GRPOConfig())[0]
    parts, total = score(rollouts, [prompt], 2, GRPOConfig(evidence_penalty=0.5))
    assert set(parts) == {"correct", "cost", "format", "evidence"}
    assert torch.equal(total, sum(parts.values()))


def test_the_evidence_term_refuses_prompts_without_boxes(tmp_path, prompts):
    config = GRPOConfig(data=str(prompts), model="unused", output_dir=str(tmp_path), evidence_penalty=0.5)
    with pytest.raises(ConfigError, match="evidence_penalty needs the oracle's boxes"):
        train_grpo(config)


def test_config_choices_are_checked_when_the_config_is_made(tmp_path):
    assert GRPOConfig().on_malformed == "answer" and GRPOConfig().area_cost == 1.0
    for bad in ({"cost_mode": "aera"}, {"on_malformed": "al"}, {"temperature": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GRPOConfig(**bad)
    toml = tmp_path / "grpo.toml"
    toml.write_text('cost_mode = "token"\n')
    with pytest.raises(ValueError, match="cost_mode must be one of 'area', 'per-crop', 'tokens'"):
        GRPOConfig.from_toml(toml)


def test_group_advantages_are_normalised_within_each_group():
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0]), num_generations=4)
    assert adv[:4].mean().abs() < 1e-6 and adv[0] > 0 > adv[1]
    assert torch.allclose(adv[:4].std(), torch.tensor(1.0), atol=1e-3)
    assert torch.equal(adv[4:], torch.zeros(4))  # a group that agrees teaches nothing


def test_policy_loss_clips_masks_and_penalises_kl():
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, kl = policy_loss(old.clone(), old, old, adv, mask, 0.2, 0.05)
    assert loss.item() == pytest.approx(0.0) and kl.item() == 0.0  # -mean(A) = 0 at ratio 1
    new = torch.tensor([[0.5, 0.5, 9.0], [0.0, -7.0, 3.0]], requires_grad=True)  # masked entries are junk
    loss, kl = policy_loss(new, old, old, adv, mask, 0.2, 0.0)
    loss.backward()
    assert new.grad[0, :2].abs().sum() == 0  # ratio e^0.5 > 1.2 with A > 0: clipped, no gradient
    assert new.grad[0, 2] == 0 and new.grad[1, 1:].abs().sum() == 0  # masked tokens never count
    assert new.grad[1, 0] > 0  # A < 0 at ratio 1: push the token's probability down
    _, kl = policy_loss(torch.zeros(2, 3), old, torch.ones(2, 3), adv, mask, 0.2, 0.05)
    assert kl.item() == pytest.approx(torch.e - 2, rel=1e-5)  # k3 estimator at ref - new = 1


def rollout_batch(backend, turns):
    """One finished rollout on a test sample (``turns`` written by the policy), as chat messages and
    as the collated batch the loss re-scores."""
    sample = next(generate("test", 1))
    engine = Engine(Scripted(backend, turns[:1], turn2=turns[1:]), RuntimeConfig(max_new_tokens=2))
    (out,) = rollout(engine, [(sample.image, sample.question)], num_generations=1)
    return out.messages, ChatCollator(backend.processor, backend.family)([out.messages])


def tiny_grpo(tmp_path, tiny_dir, prompts, **overrides):
    """A GRPO run small enough for a test: 2 prompts x G = 2 per step, 6 new tokens."""
    return GRPOConfig(
        data=str(prompts),
        model=str(tiny_dir),
        output_dir=str(tmp_path / "grpo"),
        prompts_per_step=2,
        num_generations=2,
        max_new_tokens=6,
        **overrides,
    )


def test_only_policy_tokens_are_actions_in_a_rollout(backend):
    processor = backend.processor
    messages, batch = rollout_batch(backend, ["GET_CROPS: ['0', '5']", "red"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    acted = ids[labels != -100]
    assert processor.tokenizer.decode(acted) == "GET_CROPS: ['0', '5']<|im_end|>red<|im_end|>"
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (ids == pad).sum() > 0 and not (acted == pad).any()  # three images, none of them actions


def test_malformed_calls_in_rollouts_can_be_answers_instead_of_whole_image_fetches(backend):
    image = next(generate("test", 1)).image
    for mode, turns in [("all", 2), ("answer", 1)]:
        broken = Scripted(backend, ["GET_CROPS: ['4int"])  # a policy that writes a broken call
        engine = Engine(broken, RuntimeConfig(max_new_tokens=2, on_malformed=mode))
        (out,) = rollout(engine, [(image, "q")], num_generations=1)
        assert len(out.result.turns) == turns and out.result.parse_status == "malformed"
        assert out.crop_area == (1.0 if mode == "all" else 0.0)


def test_two_grpo_steps_log_save_and_resume(tmp_path, tiny_dir, prompts):
    config = tiny_grpo(tmp_path, tiny_dir, prompts, max_steps=2, learning_rate=1e-3, save_steps=1)
    final = train_grpo(config)
    log = [json.loads(line) for line in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert {"reward", "reward_correct", "reward_cost", "accuracy", "call_rate", "rtr", "kl", "loss"} <= set(log[0])
    assert {"call_rate_crop", "call_rate_direct"} <= set(log[0])
    assert all(0 <= r["call_rate"] <= 1 and 0.2 < r["rtr"] <= 2.5 for r in log)
    before = load_processor(tiny_dir)  # the processor travels with the policy
    assert (final / "model.safetensors").is_file() and load_processor(
        final
    ).image_processor.merge_size == before.image_processor.merge_size
    config.max_steps = 3
    train_grpo(config)  # resumes after step 2
    log = [json.loads(line) for line in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert json.loads((final / "train_log.json").read_text())["resumed_from_step"] == 2


def test_grpo_resumes_from_the_last_whole_checkpoint_past_a_stray_and_a_partial_folder(tmp_path, tiny_dir, prompts):
    config = tiny_grpo(tmp_path, tiny_dir, prompts, max_steps=2, save_steps=1)
    train_grpo(config)
    checkpoints = tmp_path / "grpo" / "checkpoints"
    shutil.copytree(checkpoints / "checkpoint-1", checkpoints / "checkpoint-1.bak")  # a user's backup
    (checkpoints / "checkpoint-3").mkdir()  # a save cut short: nothing in it
    (checkpoints / "checkpoint-4").mkdir()
    (checkpoints / "checkpoint-4" / "model.safetensors").write_bytes(b"")  # and one cut halfway
    config.max_steps = 3
    final = train_grpo(config)
    log = [json.loads(line) for line in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert json.loads((final / "train_log.json").read_text())["resumed_from_step"] == 2


def test_grpo_warms_up_its_learning_rate_keeps_save_total_limit_checkpoints_and_logs_trls_metrics(
    tmp_path, tiny_dir, prompts, monkeypatch
):
    import awares.train.grpo as grpo

    def no_reference(*args, **kwargs):
        raise AssertionError("a reference pass at beta 0")

    monkeypatch.setattr(grpo, "reference_logprobs", no_reference)
    config = tiny_grpo(tmp_path, tiny_dir, prompts, max_steps=3, save_steps=1, save_total_limit=1, beta=0.0,
                       lr_scheduler_type="linear", warmup_ratio=0.2, learning_rate=1e-3)  # fmt: skip
    train_grpo(config)
    log = [json.loads(line) for line in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    # warm-up: 0 at the first of 3 updates, the peak at the second, then linear decay to 0
    assert [round(r["learning_rate"], 6) for r in log] == [0.0, 1e-3, 5e-4]
    assert all(r["kl"] == 0 and r["reward_std"] >= 0 and 0 <= r["frac_reward_zero_std"] <= 1 for r in log)
    assert sorted(p.name for p in (tmp_path / "grpo" / "checkpoints").iterdir()) == ["checkpoint-3"]


def test_lora_reference_is_the_policy_without_its_adapter_and_merges_into_attention(tiny_dir, backend):
    _, batch = rollout_batch(backend, ["red"])
    start = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    options = WeightOptions(lora=True, freeze_vision=True)
    policy = load_trainable(tiny_dir, options)
    with torch.no_grad():
        for name, weight in policy.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)  # a trained adapter
        (ref,) = reference_logprobs(policy, None, [batch])
        assert torch.allclose(ref, token_logprobs(start, batch)[0], atol=1e-5)
        assert not torch.allclose(ref, token_logprobs(policy, batch)[0], atol=1e-3)
    merged = plain(policy, options).state_dict()
    before = start.state_dict()
    assert merged.keys() == before.keys()  # a plain checkpoint: no adapter weights left
    changed = {k for k in before if not torch.equal(before[k], merged[k])}
    assert changed and all("language_model" in k and "self_attn" in k for k in changed)


def test_lora_grpo_runs_and_saves_a_plain_model(tmp_path, tiny_dir, prompts):
    config = tiny_grpo(tmp_path, tiny_dir, prompts, max_steps=1, lora=True)
    final = train_grpo(config)
    assert json.loads((tmp_path / "grpo" / "log.jsonl").read_text())["kl"] == 0.0  # step 1: policy = reference
    assert not (final / "adapter_config.json").exists()
    keys = AutoModelForImageTextToText.from_pretrained(final).state_dict().keys()
    assert keys == AutoModelForImageTextToText.from_pretrained(tiny_dir).state_dict().keys()


def test_token_logprobs_are_those_of_the_sampling_temperature(tiny_dir, backend):
    _, batch = rollout_batch(backend, ["GET_CROPS: ['0']", "red"])
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    with torch.no_grad():
        hot, mask = token_logprobs(model, batch, temperature=2.0)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
    expected = torch.log_softmax(logits / 2.0, -1).gather(-1, batch["labels"][:, 1:].clamp(min=0).unsqueeze(-1))
    assert torch.allclose(hot[mask.bool()], expected.squeeze(-1)[mask.bool()], atol=1e-5)
    assert not torch.allclose(hot[mask.bool()], token_logprobs(model, batch)[0][mask.bool()].detach(), atol=1e-3)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir, backend):
    _, batch = rollout_batch(backend, ["GET_CROPS: ['0']", "red"])
    grads = []
    for checkpointing in (False, True):
        model = load_trainable(tiny_dir, WeightOptions(gradient_checkpointing=checkpointing)).train()
        logprobs, mask = token_logprobs(model, batch)
        (-(logprobs * mask).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert model.is_gradient_checkpointing and grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-5) for n in grads[0])


def test_weights_load_in_the_chosen_dtype_and_reject_others(tiny_dir):
    model = load_trainable(tiny_dir, WeightOptions(dtype="bfloat16", lora=True))
    dtypes = {n.split(".")[-2] if "lora_" in n else "base": p.dtype for n, p in model.named_parameters()}
    assert dtypes["base"] == torch.bfloat16 and dtypes["default"] == torch.float32  # adapters stay float32
    for bad in ("float8", "int8", "Tensor"):
        with pytest.raises(ValueError, match="dtype"):
            WeightOptions(dtype=bad).torch_dtype()


def test_prompt_draws_are_seeded_and_balanced_on_request(tmp_path):
    from awares.train.rollouts import PromptSet

    path = tmp_path / "trajectories.jsonl"
    labels = ["crop"] * 2 + ["direct"] * 8
    path.write_text(
        "".join(
            json.dumps({"id": str(i), "label": t, "image": "x.png", "question": "q", "answers": ["a"]}) + "\n"
            for i, t in enumerate(labels)
        )
    )
    prompt_set = PromptSet(path)
    balanced = prompt_set.sample(6, seed=3, balance=True)
    assert [p["label"] for p in balanced] == ["crop", "direct"] * 3
    mixed = prompt_set.sample(8, seed=3, balance=False)
    assert mixed == prompt_set.sample(8, seed=3, balance=False) != prompt_set.sample(8, seed=4, balance=False)
    assert len({p["id"] for p in mixed}) == 8  # the curated mix, drawn without replacement


def test_the_command_line_seed_replaces_the_configs_zero_included(tmp_path, tiny_dir, prompts, capsys):
    from awares.cli import main

    path = tmp_path / "grpo.toml"
    path.write_text("seed = 5\nmax_steps = 1\nprompts_per_step = 2\nnum_generations = 2\nmax_new_tokens = 6\n")
    for seed in ("0", "7"):
        out = tmp_path / f"seed{seed}"
        args = ["train", "grpo", str(path), "--data", str(prompts), "--model", str(tiny_dir), "--output-dir", str(out)]
        assert main([*args, "--seed", seed]) == 0
        assert json.loads((out / "final" / "train_log.json").read_text())["config"]["seed"] == int(seed)
    assert main([*args, "--seed", "-1"]) == 2  # argparse's usage error
    assert "--seed" in capsys.readouterr().err


def test_best_step_is_the_most_accurate_then_the_cheapest_then_the_earliest():
    scores = {
        25: {"accuracy": 98.0, "rtr": 0.38},
        50: {"accuracy": 99.0, "rtr": 0.40},
        75: {"accuracy": 99.0, "rtr": 0.39},
    }
    assert best_step(scores) == 75
    assert best_step({10: {"accuracy": 50.0, "rtr": 0.3}, 5: {"accuracy": 50.0, "rtr": 0.3}}) == 5
    with pytest.raises(InputError):
        best_step({})


def test_the_step_chosen_on_eval_data_becomes_final(tmp_path, tiny_dir, prompts):
    config = tiny_grpo(
        tmp_path, tiny_dir, prompts, max_steps=2, save_steps=1,
        eval_data="synthetic:val:3", eval_batch_size=3, load_best_model_at_end=True,
    )  # fmt: skip
    final = train_grpo(config)
    log = json.loads((final / "train_log.json").read_text())
    scores = {int(step): s for step, s in log["eval"].items()}
    assert set(scores) == {1, 2} and log["final_step"] == log["best_step"] == best_step(scores)
    assert (tmp_path / "grpo" / "eval" / "step-1.jsonl").is_file()  # the scored answers stay with the run
    # The random policy scores the same at both steps, so step 1 (the earlier) is the best: give its
    # checkpoint weights of its own, and the re-run (nothing left to train) must save those as final.
    assert log["best_step"] == 1
    checkpoint = tmp_path / "grpo" / "checkpoints" / "checkpoint-1" / "model.safetensors"
    weights = load_file(checkpoint)
    weights = {k: v + 0.5 if "lm_head" in k or "embed_tokens" in k else v for k, v in weights.items()}
    save_file(weights, checkpoint, metadata={"format": "pt"})
    train_grpo(config)
    kept = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    shared = kept.keys() & weights.keys()
    assert any("embed_tokens" in k for k in shared) and all(torch.equal(weights[k], kept[k]) for k in shared)


def test_a_lora_run_scores_its_steps_and_keeps_the_best_as_a_plain_model(tmp_path, tiny_dir, prompts):
    config = tiny_grpo(
        tmp_path, tiny_dir, prompts, max_steps=2, save_steps=1, lora=True,
        eval_data="synthetic:val:3", eval_batch_size=3, load_best_model_at_end=True,
    )  # fmt: skip
    final = train_grpo(config)
    log = json.loads((final / "train_log.json").read_text())
    assert set(log["eval"]) == {"1", "2"} and log["final_step"] == log["best_step"] == 1  # the scores tie
    keys = AutoModelForImageTextToText.from_pretrained(final).state_dict().keys()
    assert keys == AutoModelForImageTextToText.from_pretrained(tiny_dir).state_dict().keys()


def test_choosing_the_best_step_needs_eval_data(tmp_path, tiny_dir, prompts):
    with pytest.raises(ValueError, match="eval_data"):
        tiny_grpo(tmp_path, tiny_dir, prompts, load_best_model_at_end=True)


def test_bad_rows_of_eval_data_are_listed_and_left_out(tmp_path, capsys):
    data = write_dataset(generate("val", 2), tmp_path / "val")
    with (data / DATA_FILE).open("a") as f:
        f.write('{"id": "broken"}\n')
    scorer = StepScorer(str(data), tmp_path / "eval", max_new_tokens=4, batch_size=2)
    assert len(scorer.records) == 2 and "skipped 1 bad row(s)" in capsys.readouterr().err
    assert json.loads((tmp_path / "eval" / "data.errors.jsonl").read_text())["line"] == 3

"""Every supported family (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5) through every path, on a tiny
random checkpoint of each saved as a user's would be: token counts, KV reuse between turns, batches,
jump-forward decoding, the attention hook, the commands, curation, SFT, GRPO, serving and the
lmms-eval plugin."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from awares.cli import main
from awares.crops import VisionGrid
from awares.data import generate, write_dataset
from awares.errors import ModelLoadError
from awares.models import HFBackend, Sampling
from awares.models.attention import LastTokenAttention
from awares.models.endpoint import data_url
from awares.models.families import FAMILIES, family_of
from awares.protocol import turn1_messages, turn2_messages
from awares.runtime import SERVED_POLICIES, Engine, Request, RuntimeConfig
from awares.serve import ServeConfig
from awares.train.collate import ChatCollator
from awares.train.common import WeightOptions, load_trainable
from awares.train.grpo import token_logprobs
from awares.train.rollouts import rollout

from .conftest import ForcedCalls, Server, chat, from_scratch_logits, scene

QUESTIONS = ["What is written?", "Colour of the box?", "Which shape?"]
IMAGES = [scene(448, 336), scene(336, 448, 1), scene(320, 224, 2)]


def test_the_checkpoint_is_its_familys_and_counts_tokens_as_its_processor(family_dir, family_backend):
    family = family_of(family_backend.model)
    config = json.loads((family_dir / "config.json").read_text())
    saved = json.loads((family_dir / "preprocessor_config.json").read_text())
    assert config["architectures"] == [family.model_class] and saved["processor_class"] == family.processor_class
    grid, processor = VisionGrid.from_processor(family_backend.processor), family_backend.processor
    assert grid.patch_size * grid.merge_size == family.cell
    for size in [(448, 336), (333, 517), (1000, 120), (64, 64)]:
        image = scene(*size)
        counted = processor.image_processor([image], return_tensors="pt")["image_grid_thw"].prod() // 4
        encoded = family_backend._encode([family_backend._prompt(turn1_messages(image, "q"))], [image])
        assert grid.tokens(*size) == counted == int((encoded["input_ids"] == family_backend.image_token_id).sum())


def test_a_model_type_awares_does_not_run_is_a_clear_error(tmp_path, family_dir, prompts, capsys):
    import shutil

    copy = tmp_path / "other"
    shutil.copytree(family_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    with pytest.raises(ModelLoadError, match="'llava' is not supported; awares runs Qwen2-VL"):
        HFBackend.load(copy)
    image = tmp_path / "page.png"
    IMAGES[0].save(image)
    for args in (
        ["ask", str(image), "q", "--model", str(copy)],
        ["train", "sft", "--data", str(prompts), "--model", str(copy)],
    ):
        assert main([*args, "--output-dir", str(tmp_path / "out")] if args[0] == "train" else args) == 2
        assert "'llava' is not supported" in capsys.readouterr().err


def test_turn2_on_the_turn1_cache_equals_a_from_scratch_prefill(family_backend):
    backend = family_backend
    rows = 1 if backend.family.hybrid else 2  # a hybrid model decodes conversations one at a time
    conversations = [turn1_messages(im, q) for im, q in zip(IMAGES[:rows], QUESTIONS[:rows])]
    with ForcedCalls(backend, ["0", "5"], QUESTIONS[:1]):  # row 0 calls (jump-forward), row 1 answers
        turn1 = backend.generate(conversations, max_new_tokens=12)
    assert turn1.texts[0] == "GET_CROPS: ['0', '5']"
    follow = [
        turn2_messages(c, t, [scene(224, 168, 3), scene(224, 336, 4)]) for c, t in zip(conversations, turn1.texts)
    ]
    turn2 = backend.extend(turn1.session, list(range(rows)), follow, max_new_tokens=2, output_logits=True)
    prompt = turn2.session.sequences.shape[1] - len(turn2.logits)
    ids, mask = turn2.session.sequences[:, :prompt], turn2.session.attention_mask[:, :prompt]
    torch.testing.assert_close(turn2.logits[0], from_scratch_logits(backend, ids, mask, follow), atol=1e-4, rtol=1e-4)


def _engine_turns(backend, requests, batch_size):
    engine = Engine(backend, RuntimeConfig(max_new_tokens=16, batch_size=batch_size))
    with ForcedCalls(backend, ["3", "4"], QUESTIONS[::2]):
        return [(r.turns, r.crops, r.rtr) for r in engine.answer_batch(requests, "crops")]


def test_a_batch_answers_as_each_request_alone_and_jump_forward_as_token_by_token(family_dir, family_backend):
    requests = [Request(im, q) for im, q in zip(IMAGES, QUESTIONS)]
    batched = _engine_turns(family_backend, requests, 3)
    assert [crops for _, crops, _ in batched] == [("3", "4"), (), ("3", "4")]
    assert batched == [_engine_turns(family_backend, [r], 1)[0] for r in requests]
    stepped = HFBackend.load(family_dir, device="cpu", dtype="float32", jump_forward=False)
    assert _engine_turns(stepped, requests, 3) == batched


def test_the_attention_hook_equals_eager_attentions_own_weights(family_dir, family_backend):
    eager = AutoModelForImageTextToText.from_pretrained(family_dir, attn_implementation="eager").eval()
    conversations = [turn1_messages(IMAGES[0], QUESTIONS[0]), turn1_messages(IMAGES[2], QUESTIONS[1])]
    texts = [family_backend._prompt(c) for c in conversations]
    inputs = family_backend._encode(texts, [IMAGES[0], IMAGES[2]])
    attention_layers = family_backend.family.attention_layers(eager)
    assert len(attention_layers) == (1 if family_backend.family.hybrid else 2)
    for layer in range(-len(attention_layers), 0):
        with torch.no_grad(), LastTokenAttention(eager, layer, inputs["attention_mask"]) as probe:
            out = eager(**inputs, output_attentions=True, use_cache=True)
        expected = out.attentions[layer][:, :, -1].mean(dim=1)  # one entry per softmax-attention layer
        torch.testing.assert_close(probe.weights, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("policy", ["full", "low", "crops", "oracle", "attention"])
def test_ask_runs_every_policy(tmp_path, family_dir, family_backend, policy, capsys):
    path = tmp_path / "page.png"
    IMAGES[0].save(path)
    args = ["ask", str(path), QUESTIONS[0], "--model", str(family_dir), "--policy", policy, "--json"]
    assert main([*args, "--max-new-tokens", "4", *(["--crops", "0,5"] if policy == "oracle" else [])]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"]["full"] == VisionGrid.from_processor(family_backend.processor).tokens(448, 336)


def test_eval_runs_every_policy(tmp_path, family_dir, capsys):
    data = write_dataset(generate("test", 4), tmp_path / "ds")
    args = ["eval", "--data", str(data), "--model", str(family_dir), "--out", str(tmp_path / "eval")]
    assert main([*args, "--max-new-tokens", "3", "--policy", "full,low,crops,oracle,attention"]) == 0
    table = capsys.readouterr().out
    assert all(policy in table for policy in ["| full", "| low", "| crops", "| oracle", "| attention"])


def test_lora_reaches_every_layer_kind(family_dir):
    family = family_of(json.loads((family_dir / "config.json").read_text())["model_type"])
    policy = load_trainable(family_dir, WeightOptions(lora=True, freeze_vision=True))
    adapted = {name.split(".")[-1] for name, module in policy.named_modules() if hasattr(module, "lora_A")}
    assert adapted == set(family.lora_targets)
    if family.hybrid:
        assert {"in_proj_qkv", "in_proj_z", "out_proj"} <= adapted


def test_curate_with_each_oracle_full_sft_and_lora_grpo_run_on_the_family(tmp_path, family_dir, prompts, capsys):
    data = write_dataset(generate("train", 4, detail_fraction=0.5), tmp_path / "train")
    curate = ["curate", "--data", str(data), "--out", str(tmp_path / "curate"), "--model", str(family_dir)]
    for oracle in ("gt", "attention"):
        assert main([*curate, "--max-new-tokens", "4", "--batch-size", "2", "--oracle", oracle]) == 0
    sft = tmp_path / "sft.toml"
    sft.write_text("max_steps = 1\nbatch_size = 2\n")
    out = tmp_path / "sft"
    args = ["train", "sft", str(sft), "--data", str(prompts), "--model", str(family_dir), "--output-dir", str(out)]
    assert main(args) == 0
    grpo = tmp_path / "grpo.toml"
    grpo.write_text("max_steps = 1\nprompts_per_step = 2\nnum_generations = 2\nmax_new_tokens = 6\nlora = true\n")
    args = ["train", "grpo", str(grpo), "--data", str(prompts), "--model", str(out / "final")]
    assert main([*args, "--output-dir", str(tmp_path / "grpo")]) == 0
    log = json.loads((tmp_path / "grpo" / "log.jsonl").read_text().splitlines()[0])
    assert log["step"] == 1 and 0 <= log["call_rate"] <= 1
    assert family_of(AutoModelForImageTextToText.from_pretrained(tmp_path / "grpo" / "final")).model_type in FAMILIES


def test_the_server_answers_every_served_policy(family_backend):
    server = Server(Engine(family_backend, RuntimeConfig(max_new_tokens=4)), ServeConfig(max_batch=4, max_wait_ms=5))
    try:
        tokens = VisionGrid.from_processor(family_backend.processor).tokens(448, 336)
        for policy in SERVED_POLICIES:
            status, reply, _ = server.post(chat(data_url(IMAGES[0]), QUESTIONS[0], policy=policy))
            assert status == 200 and reply["awares"]["policy"] == policy, (policy, reply)
            assert reply["awares"]["tokens"]["full"] == tokens
    finally:
        server.stop()


def test_the_lmms_eval_plugin_answers_with_the_family(tmp_path, family_dir):
    pytest.importorskip("lmms_eval", reason="lmms-eval is installed with --no-deps (see .ci/run)")
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model

    model = get_model("awares").create_from_arg_string(
        f"pretrained={family_dir},log_dir={tmp_path},max_new_tokens=16", {"batch_size": 2, "device": "cpu"}
    )
    model.task_dict = {"chartqa": {"test": [{"images": [im]} for im in IMAGES]}}
    arguments = [
        (q, {"max_new_tokens": 16}, lambda doc: doc["images"], i, "chartqa", "test") for i, q in enumerate(QUESTIONS)
    ]
    requests = [
        Instance("generate_until", a, idx=0, metadata={"task": "chartqa", "doc_id": a[3], "repeats": 1})
        for a in arguments
    ]
    with ForcedCalls(model.engine.backend, ["1"], QUESTIONS[:1]):
        model.generate_until(requests)
    rows = [json.loads(line) for line in (tmp_path / "chartqa.jsonl").read_text().splitlines()]
    assert sorted(r["doc_id"] for r in rows) == [0, 1, 2] and not any("error" in r for r in rows)
    assert next(r for r in rows if r["doc_id"] == 0)["crops"] == ["1"]


def test_sampled_rollouts_call_and_the_training_batch_holds_what_was_decoded(family_backend):
    engine = Engine(family_backend, RuntimeConfig(max_new_tokens=12, batch_size=4, sampling=Sampling(temperature=1.0)))
    torch.manual_seed(0)
    with ForcedCalls(family_backend, ["2"], QUESTIONS[:1]):
        rollouts = rollout(engine, list(zip(IMAGES[:2], QUESTIONS[:2])), num_generations=2)
    assert [len(r.result.turns) for r in rollouts[:2]] == [2, 2] and rollouts[0].result.crops == ("2",)
    batch = ChatCollator(family_backend.processor, family_backend.family)([r.messages for r in rollouts])
    tokenizer = family_backend.tokenizer
    for row, r in enumerate(rollouts):
        labels = batch["labels"][row]
        spans = torch.tensor([0, *(labels != -100).int().tolist(), 0]).diff()
        starts, ends = (spans == 1).nonzero().flatten(), (spans == -1).nonzero().flatten()
        assert len(starts) == len(r.result.turns)  # one span per assistant turn, nothing else
        for turn, start, end in zip(r.result.turns, starts, ends):
            assert tokenizer.decode(labels[start:end], skip_special_tokens=True) == turn
    logprobs, mask = token_logprobs(family_backend.model, batch)
    assert torch.isfinite(logprobs[mask.bool()]).all()

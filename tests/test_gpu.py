"""The CUDA / bfloat16 paths, run by ``scripts/gpu_check.sh`` on a GPU machine; skipped without one."""

import json

import pytest
import torch

from awares.data import resolve
from awares.images import load_image
from awares.models import HFBackend, default_model_dir
from awares.runtime import Engine, Request, RuntimeConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def requests():
    records, _ = resolve("synthetic:test:48")
    return [Request(load_image(r.image), r.question) for r in records]


def test_the_shipped_policy_answers_on_cuda_in_bfloat16_as_on_the_cpu(requests):
    config = RuntimeConfig(max_new_tokens=16, batch_size=16)
    gpu = HFBackend.load(default_model_dir("crops"))
    assert gpu.model.dtype == torch.bfloat16 and gpu.device.type == "cuda"  # the defaults on a GPU
    cpu = HFBackend.load(default_model_dir("crops"), device="cpu")
    on_gpu = Engine(gpu, config).answer_batch(requests)
    on_cpu = Engine(cpu, config).answer_batch(requests)
    same = sum(g.answer == c.answer and g.crops == c.crops for g, c in zip(on_gpu, on_cpu))
    assert same >= 0.85 * len(requests)  # bfloat16 flips a few near-ties of a float32-trained model
    for g, c in zip(on_gpu, on_cpu):
        assert g.tokens.full == c.tokens.full and (g.crops != c.crops or g.rtr == c.rtr)


def test_a_batch_on_cuda_answers_like_one_request_at_a_time(requests):
    engine = Engine(HFBackend.load(default_model_dir("crops"), dtype="float32"), RuntimeConfig(max_new_tokens=16))
    batched = engine.answer_batch(requests[:16], batch_size=8)
    single = engine.answer_batch(requests[:16], batch_size=1)
    assert [(r.answer, r.crops) for r in batched] == [(r.answer, r.crops) for r in single]


def test_sft_and_grpo_train_in_bfloat16_on_cuda(tmp_path, tiny_dir):
    from awares.curate import CurateConfig, GroundTruthOracle, RuleJudge, curate
    from awares.train.grpo import GRPOConfig, train_grpo
    from awares.train.sft import SFTConfig, train_sft

    records, _ = resolve("synthetic:train:24")
    engine = Engine(HFBackend.load(default_model_dir("full")), RuntimeConfig(max_new_tokens=16, batch_size=8))
    curate(
        records,
        engine,
        RuleJudge(),
        GroundTruthOracle(),
        CurateConfig(out_dir=str(tmp_path / "c"), keep_unsolvable=True),
    )
    data = str(tmp_path / "c" / "trajectories.jsonl")
    sft = train_sft(
        SFTConfig(
            data=data,
            model=str(tiny_dir),
            output_dir=str(tmp_path / "sft"),
            max_steps=3,
            batch_size=4,
            dtype="bfloat16",
        )
    )
    assert json.loads((sft / "train_log.json").read_text())["log_history"]
    grpo = train_grpo(
        GRPOConfig(
            data=data,
            model=str(sft),
            output_dir=str(tmp_path / "grpo"),
            max_steps=2,
            prompts_per_step=4,
            num_generations=4,
            max_new_tokens=8,
            dtype="bfloat16",
        )
    )
    steps = [json.loads(line) for line in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and all(abs(s["loss"]) < 1e3 for s in steps)
    weights = HFBackend.load(grpo).model.parameters()
    assert all(torch.isfinite(w).all() for w in weights)

"""Every shipped config loads into its dataclass (unknown keys are errors) and names configs that exist."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from awares.errors import ConfigError
from awares.models import TinyConfig
from awares.pipeline import PipelineConfig
from awares.train.base import BaseTrainConfig
from awares.train.grpo import GRPOConfig
from awares.train.sft import SFTConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "pipeline",
    [
        "configs/pipeline.toml",
        "configs/gpu/pipeline.toml",
        "configs/gpu/check.toml",
        "configs/qwen3.5/pipeline.toml",
        "configs/qwen3-vl/pipeline.toml",
        "configs/all-sizes/pipeline.toml",
    ],
)
def test_pipeline_configs_and_the_stage_configs_they_name_load(pipeline, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = PipelineConfig.from_toml(pipeline)
    base = config.stage("base", BaseTrainConfig)
    TinyConfig(**base.model)
    for toml in config.ground:  # one grounding TOML, or a size curriculum of them (all-sizes)
        assert config.stage("ground", BaseTrainConfig, toml, init="runs/x").lr_scheduler == "constant_with_warmup"
    config.stage("sft", SFTConfig)
    grpo = config.stage("grpo", GRPOConfig)
    assert grpo.on_malformed == "answer"  # a broken call must not fetch the whole image for free


def test_pipeline_overrides_shorten_a_stage_config_and_are_checked(tmp_path):
    check = PipelineConfig.from_toml(ROOT / "configs/gpu/check.toml")
    full = PipelineConfig.from_toml(ROOT / "configs/gpu/pipeline.toml")
    grpo, grpo_full = (c.stage("grpo", GRPOConfig, model="m") for c in (check, full))
    assert (grpo.max_steps, grpo_full.max_steps) == (10, 400) and grpo.model == "m"
    assert grpo.num_generations == grpo_full.num_generations == 8  # everything else is the stage's TOML
    for text, message in [
        ("[overrides.grpo]\nmax_step = 3\n", "unknown keys in \\[overrides.grpo\\]: max_step"),
        ('[overrides.grpo]\ncost_mode = "token"\n', "cost_mode must be one of"),
        ("[overrides.eval]\nlimit = 3\n", "unknown stages"),
    ]:
        path = tmp_path / "pipeline.toml"
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            PipelineConfig.from_toml(path).stage("grpo", GRPOConfig)


def test_the_7b_configs_train_a_bfloat16_lora_with_the_papers_recipe():
    sft = SFTConfig.from_toml(ROOT / "configs/qwen2.5-vl-7b/sft.toml")
    grpo = GRPOConfig.from_toml(ROOT / "configs/qwen2.5-vl-7b/grpo.toml")
    for config in (sft, grpo):
        assert config.lora and config.freeze_vision and config.gradient_checkpointing
        assert config.torch_dtype() == torch.bfloat16
    assert sft.batch_size * sft.gradient_accumulation_steps == 128 and sft.call_weight == 5.0
    assert (grpo.num_generations, grpo.beta, grpo.miss_penalty, grpo.on_malformed) == (8, 0.05, 2.0, "answer")


def test_unknown_config_keys_are_errors(tmp_path):
    path = tmp_path / "sft.toml"
    path.write_text("epochs = 1.0\nlearning_rat = 1e-4\n")
    with pytest.raises(ValueError, match="learning_rat"):
        SFTConfig.from_toml(path)


def test_a_bad_config_file_is_a_clear_error_with_exit_status_2(tmp_path, capsys):
    from awares.cli import main

    for name, text, message in [
        ("choice.toml", 'cost_mode = "token"\n', "cost_mode must be one of 'area', 'per-crop', 'tokens'"),
        ("keys.toml", "learning_rat = 1e-4\n", "unknown keys"),
        ("syntax.toml", "max_steps = \n", "cannot read config"),
        ("self.toml", 'extends = "self.toml"\n', "extends loops back"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        assert main(["train", "grpo", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["train", "grpo", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml does not exist" in capsys.readouterr().err


def test_a_config_extends_another_and_states_only_what_it_changes(tmp_path):
    (tmp_path / "grpo.toml").write_text("max_steps = 300\nnum_generations = 4\n")
    (tmp_path / "ablations").mkdir()
    short = tmp_path / "ablations" / "short.toml"
    short.write_text('extends = "../grpo.toml"  # relative to this file\nmax_steps = 10\n')
    config = GRPOConfig.from_toml(short)
    assert (config.max_steps, config.num_generations) == (10, 4)
    (tmp_path / "pipeline.toml").write_text('out_dir = "a"\n[overrides.grpo]\nmax_steps = 3\nnum_generations = 2\n')
    (tmp_path / "child.toml").write_text('extends = "pipeline.toml"\n[overrides.grpo]\nmax_steps = 5\n')
    child = PipelineConfig.from_toml(tmp_path / "child.toml")
    assert child.out_dir == "a" and child.overrides == {"grpo": {"max_steps": 5}}  # a table is replaced whole


def test_a_bad_extends_is_a_clear_error(tmp_path):
    (tmp_path / "loop2.toml").write_text('extends = "loop.toml"\n')
    (tmp_path / "typo.toml").write_text("max_step = 3\n")
    for name, text, message in [
        ("missing.toml", 'extends = "nowhere.toml"\n', "cannot read config"),
        ("number.toml", "extends = 3\n", "extends must name a TOML file"),
        ("loop.toml", 'extends = "loop2.toml"\n', "loops back"),
        ("parent-key.toml", 'extends = "typo.toml"\n', re.escape(f"in {tmp_path / 'typo.toml'}: max_step")),
    ]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            GRPOConfig.from_toml(tmp_path / name)


GRPO_ABLATION_KEYS = {
    "grpo-area-cost-0.5.toml": {"area_cost": 0.5},
    "grpo-kl-0.2.toml": {"beta": 0.2},
    "grpo-evidence-0.5.toml": {"evidence_penalty": 0.5},
    "grpo-seed-1.toml": {"seed": 1},
    "grpo-lr-3e-5.toml": {"learning_rate": 3e-5},
}
SFT_ABLATION_KEYS = {"sft-3-epochs.toml": {"epochs": 3.0}, "sft-freeze-vision.toml": {"freeze_vision": True}}
ABLATIONS = {
    "grpo-area-cost-0.5.toml": GRPOConfig,
    "grpo-kl-0.2.toml": GRPOConfig,
    "grpo-evidence-0.5.toml": GRPOConfig,
    "grpo-seed-1.toml": GRPOConfig,
    "grpo-lr-3e-5.toml": GRPOConfig,
    "grounding.toml": PipelineConfig,
    "grounding-warmup.toml": PipelineConfig,
    "grounding-warmup-long.toml": PipelineConfig,
    "grounding-after.toml": PipelineConfig,
    "grounding-after-short.toml": PipelineConfig,
    "grounding-plain-init.toml": BaseTrainConfig,
    "sft-3-epochs.toml": SFTConfig,
    "sft-freeze-vision.toml": SFTConfig,
    "length-grouped.toml": PipelineConfig,
    "oracle-attention.toml": PipelineConfig,
    "oracle-attention-evidence.toml": PipelineConfig,
    "oracle-attention-ungrounded.toml": PipelineConfig,
}
# configs/ablations/length-grouped.toml: configs/pipeline.toml's stages with these keys set
LENGTH_GROUPED = {"base": {"length_pool": 128}, "ground": {"length_pool": 128}, "sft": {"group_by_length": True}}
STAGES = {"base": BaseTrainConfig, "ground": BaseTrainConfig, "sft": SFTConfig, "grpo": GRPOConfig}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "ablations").glob("*.toml")), ids=lambda p: p.name)
def test_ablation_configs_load(path):
    config = ABLATIONS[path.name].from_toml(path)  # every ablation is listed here
    if isinstance(config, GRPOConfig):  # configs/grpo.toml but for the key it names
        shipped = GRPOConfig.from_toml(ROOT / "configs/grpo.toml")
        assert config.on_malformed == "answer" and config != shipped
        assert config == replace(shipped, **GRPO_ABLATION_KEYS[path.name])
    elif isinstance(config, SFTConfig):  # configs/sft.toml but for the keys it names
        shipped = SFTConfig.from_toml(ROOT / "configs/sft.toml")
        assert config != shipped and config == replace(shipped, **SFT_ABLATION_KEYS[path.name])
    elif path.name == "length-grouped.toml":
        shipped = PipelineConfig.from_toml(ROOT / "configs/pipeline.toml")
        assert replace(config, out_dir=shipped.out_dir, overrides={}) == shipped
        for name, cls in STAGES.items():
            toml = shipped.ground[0] if name == "ground" else None  # the one grounding TOML of both
            expected = replace(shipped.stage(name, cls, toml), **LENGTH_GROUPED.get(name, {}))
            assert config.stage(name, cls, toml) == expected
            assert (expected != shipped.stage(name, cls, toml)) == (name in LENGTH_GROUPED)
    elif path.name == "oracle-attention.toml":  # configs/pipeline.toml but for curation's oracle and GRPO's step
        shipped = PipelineConfig.from_toml(ROOT / "configs/pipeline.toml")
        assert (config.oracle, config.base_model, config.ground) == ("attention", "src/awares/assets/base", [])
        kept = {"eval_data": "synthetic:val:400", "load_best_model_at_end": True}
        assert config.overrides == {"grpo": kept}
        assert config.stage("grpo", GRPOConfig) == replace(shipped.stage("grpo", GRPOConfig), **kept)
        same = replace(config, out_dir=shipped.out_dir, oracle="gt", base_model="", ground=shipped.ground, overrides={})
        assert same == shipped
    elif path.name == "oracle-attention-evidence.toml":  # oracle-attention.toml with GRPO's evidence term
        plain = PipelineConfig.from_toml(path.parent / "oracle-attention.toml")
        assert replace(config, out_dir=plain.out_dir, overrides=plain.overrides) == plain
        assert config.stage("grpo", GRPOConfig) == replace(plain.stage("grpo", GRPOConfig), evidence_penalty=0.5)
    elif path.name == "oracle-attention-ungrounded.toml":  # oracle-attention.toml on the base stage's own output
        plain = PipelineConfig.from_toml(path.parent / "oracle-attention.toml")
        assert replace(config, out_dir=plain.out_dir, base_model=plain.base_model) == plain
        assert config.base_model == "runs/all-sizes/pipeline-own-base/base/final" and config.ground == []
    elif isinstance(config, PipelineConfig):
        base = config.stage("base", BaseTrainConfig, output_dir="runs/x")
        assert base.ground in (0.3, 0.5) and TinyConfig(**base.model).patch_filter_mean == 0.3
        assert base.ground_steps in (0, 2000)
        if config.ground:  # the shipped run: configs/pipeline.toml's stages on v7's base
            shipped = PipelineConfig.from_toml(ROOT / "configs/pipeline.toml")
            assert (config.ground, config.sft, config.grpo) == (shipped.ground, shipped.sft, shipped.grpo)
            assert config.base_model == "runs/pipeline-v7/base/final"
            v7 = PipelineConfig.from_toml(ROOT / "configs/ablations/grounding.toml")
            assert v7.out_dir == "runs/pipeline-v7"
            assert v7.stage("base", BaseTrainConfig) == shipped.stage("base", BaseTrainConfig)  # v7's base is ours
        config.stage("sft", SFTConfig)
        config.stage("grpo", GRPOConfig)
    else:
        assert config.ground == 0.3 and config.model == {}


def test_the_qwen35_miniature_is_the_shipped_pipeline_on_a_qwen35_base(monkeypatch):
    monkeypatch.chdir(ROOT)
    miniature, shipped = (
        PipelineConfig.from_toml(p) for p in ("configs/qwen3.5/pipeline.toml", "configs/pipeline.toml")
    )
    assert {k: v for k, v in vars(miniature).items() if k not in ("out_dir", "base")} == {
        k: v for k, v in vars(shipped).items() if k not in ("out_dir", "base")
    }
    base, shipped_base = miniature.stage("base", BaseTrainConfig), shipped.stage("base", BaseTrainConfig)
    assert base.model == {**shipped_base.model, "family": "qwen3_5", "patch_size": 14}
    assert {**vars(base), "model": None, "output_dir": None} == {
        **vars(shipped_base),
        "model": None,
        "output_dir": None,
    }


def test_the_all_sizes_miniature_grounds_curates_and_selects_on_every_size(monkeypatch):
    monkeypatch.chdir(ROOT)
    config, shipped = (
        PipelineConfig.from_toml(p) for p in ("configs/all-sizes/pipeline.toml", "configs/pipeline.toml")
    )
    # The curriculum starts from the shipped base: configs/pipeline.toml's ground stage on v7's base
    # (its train log holds the config it ran; keys added since then hold their defaults) ...
    assert config.base_model == "src/awares/assets/base"
    ran = json.loads((ROOT / config.base_model / "train_log.json").read_text())["config"]
    small = shipped.stage("ground", BaseTrainConfig, shipped.ground[0], init="runs/x")
    assert replace(small, init=ran["init"], output_dir=ran["output_dir"]) == replace(BaseTrainConfig(), **ran)
    assert ran["init"] == PipelineConfig.from_toml(ROOT / "configs/ablations/grounding-after.toml").base_model
    # ... then grounds on every size
    assert config.ground == ["configs/all-sizes/ground.toml"]
    every = config.stage("ground", BaseTrainConfig, config.ground[0], init="runs/x")
    changed = {"train_split": "train-all", "max_steps": 1000, "length_pool": 96}
    assert every == replace(small, **changed)
    assert config.curate_data == "synthetic:train-all:4000"
    assert config.stage("sft", SFTConfig) == replace(shipped.stage("sft", SFTConfig), group_by_length=True)
    grpo = config.stage("grpo", GRPOConfig)
    assert grpo.eval_data == "synthetic:val-all:300" and grpo.load_best_model_at_end
    with pytest.raises(ConfigError, match="train_split must be one of"):
        shipped.stage("base", BaseTrainConfig).with_values({"train_split": "train-everything"}, "test")

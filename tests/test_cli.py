import json

import pytest
from PIL import Image

from awares.cli import main

from .conftest import scene


@pytest.fixture()
def image_path(tmp_path):
    path = tmp_path / "scene.png"
    scene(448, 336).save(path)
    return path


def test_ask_prints_answer_crops_rtr_and_timings(tiny_dir, image_path, capsys):
    assert main(["ask", str(image_path), "What is written?", "--model", str(tiny_dir), "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("answer: ") and "RTR 0.2" in out and "turn1" in out


def test_ask_json_for_every_policy(tiny_dir, image_path, capsys):
    for policy in ["full", "low", "crops", "oracle"]:
        args = [
            "ask",
            str(image_path),
            "q?",
            "--model",
            str(tiny_dir),
            "--json",
            "--policy",
            policy,
            "--max-new-tokens",
            "2",
        ]
        assert main(args + (["--crops", "0,5"] if policy == "oracle" else [])) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["policy"] == policy and result["question"] == "q?"
        tokens = result["tokens"]
        assert result["rtr"] == pytest.approx((tokens["view"] + tokens["crops"]) / tokens["full"], abs=1e-3)
        if policy in ("full", "low"):  # one pass, no crops: the whole image, or a quarter of its tokens
            assert tokens["crops"] == 0 and (tokens["view"] == tokens["full"]) == (policy == "full")
            assert policy == "full" or tokens["view"] <= tokens["full"] / 3
        if policy == "oracle":
            assert result["crops"] == ["0", "5"] and tokens["crops"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "{tmp}/missing.png", "q", "--model", "{model}"], "does not exist"),
        (["ask", "{tmp}/corrupt.jpg", "q", "--model", "{model}"], "cannot read"),
        (["ask", "{tmp}/tiny.png", "q", "--model", "{model}"], "at least 28"),
        (["ask", "{tmp}/long.png", "q", "--model", "{model}"], "aspect ratio"),
        (["ask", "{image}", "  ", "--model", "{model}"], "question is empty"),
        (["ask", "{image}", "q", "--model", "{tmp}/empty_model"], "missing config.json"),
        (["ask", "{image}", "q", "--model", "{tmp}/nowhere"], "does not exist"),
        (["ask", "{image}", "q", "--policy", "oracle", "--model", "{model}"], "needs --crops"),
        (["ask", "{image}", "q", "--policy", "oracle", "--crops", "0,12", "--model", "{model}"], "unknown crop ids"),
    ],
)
def test_user_errors_exit_2_with_a_message_and_no_traceback(args, message, tmp_path, tiny_dir, image_path, capsys):
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    Image.new("RGB", (20000, 50)).save(tmp_path / "long.png")
    (tmp_path / "empty_model").mkdir()
    assert main([a.format(tmp=tmp_path, model=tiny_dir, image=image_path) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_help_names_every_command(capsys):
    assert main(["--help"]) == 0  # the installed console script runs in test_hub.py and test_readme.py
    help_text = capsys.readouterr().out
    for command in ["ask", "demo", "build-tiny", "train", "serve", "pipeline"]:
        assert command in help_text


def test_demo_runs_every_policy_on_benchmark_samples(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    for policy in ["[full]", "[low]", "[crops]", "[oracle]"]:
        assert out.count(policy) == 2  # one detail and one global question
    assert "RTR 1.000" in out and "RTR 0.250" in out and "ground truth:" in out


def test_random_tiny_model_is_built_offline_once(tmp_path, monkeypatch):
    from awares.models.default import random_tiny_dir

    monkeypatch.setenv("AWARES_HOME", str(tmp_path))
    first = random_tiny_dir()
    assert first == tmp_path / "tiny-random" and (first / "model.safetensors").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert random_tiny_dir() == first and (first / "model.safetensors").stat().st_mtime_ns == stamp


def test_default_model_is_the_shipped_policy_for_crops_and_the_base_for_baselines(tmp_path, monkeypatch):
    from awares.models import default
    from awares.models.default import default_base_dir, default_model_dir

    monkeypatch.setenv("AWARES_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(default, "ASSETS", tmp_path / "assets")
    for name in ("base", "awares"):
        (tmp_path / "assets" / name).mkdir(parents=True)
        (tmp_path / "assets" / name / "model.safetensors").write_bytes(b"")
    assert default_model_dir("crops") == tmp_path / "assets" / "awares"
    assert {default_model_dir(p) for p in ("full", "low", "oracle")} == {tmp_path / "assets" / "base"}
    assert default_base_dir() == tmp_path / "assets" / "base"
    (tmp_path / "assets" / "awares" / "model.safetensors").unlink()
    monkeypatch.setattr(default, "random_tiny_dir", lambda: tmp_path / "random")
    assert default_model_dir("crops") == tmp_path / "random"  # no shipped policy: the random tiny model


def test_eval_runs_the_baselines_on_the_baseline_model_and_the_policy_on_the_model(tmp_path, tiny_dir, capsys):
    from awares.models import default_base_dir

    out = tmp_path / "eval"  # a random model as the policy: the base's answers can only come from the base
    common = ["eval", "--data", "synthetic:test:6", "--policy", "full,crops", "--limit", "6"]
    assert main([*common, "--model", str(tiny_dir), "--baseline-model", str(default_base_dir()),
                 "--out", str(out)]) == 0  # fmt: skip
    table = capsys.readouterr().out
    assert "| full " in table and "| crops " in table
    assert main(["eval", "--data", "synthetic:test:6", "--policy", "full", "--model", str(default_base_dir()),
                 "--out", str(tmp_path / "base")]) == 0  # fmt: skip
    ran = [json.loads(line) for line in (out / "full.jsonl").read_text().splitlines()]
    base = [json.loads(line) for line in (tmp_path / "base" / "full.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in ran] == [r["answer"] for r in base]  # full ran on the base, not the policy
    policy = [json.loads(line)["answer"] for line in (out / "crops.jsonl").read_text().splitlines()]
    assert policy != [r["answer"] for r in base]


def test_a_file_where_a_folder_belongs_and_a_folder_where_a_file_belongs_exit_2(tmp_path, image_path, capsys):
    a_file, a_folder = tmp_path / "results.txt", tmp_path / "folder"
    a_file.write_text("not a folder")
    a_folder.mkdir()
    f, d = str(a_file), str(a_folder)
    cases = [
        ["eval", "--out", f],
        ["demo", "--out", f],
        ["curate", "--out", f],
        ["curate", "--judge-template", d],
        ["synth", "--out", f],
        ["train", "base", "--output-dir", f],
        ["train", "base", d],
        ["train", "base", "--init", f],
        ["train", "sft", "--output-dir", f],
        ["train", "sft", "--data", d],
        ["train", "grpo", d],
        ["train", "grpo", "--data", d],
        ["pipeline", "--out", f],
        ["pipeline", d],
        ["pipeline", "--base-model", f],
        ["serve", "--allowed-local-media-path", f],
        ["build-tiny", f],
        ["ask", d, "q"],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert ("is a file; give a folder" in err or "is a folder; give a file" in err) and "Traceback" not in err, args
    assert not list(a_folder.iterdir())  # nothing was written


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_training_flags_come_from_the_config_and_zero_or_false_take_effect(tmp_path, tiny_dir, prompts, stage):
    toml = tmp_path / "stage.toml"
    toml.write_text(
        "max_steps = 50\nsave_steps = 7\ngroup_by_length = true\n" if stage == "sft" else "max_steps = 50\nbeta = 0.3\n"
    )
    out = tmp_path / stage
    args = ["train", stage, str(toml), "--data", str(prompts), "--model", str(tiny_dir), "--output-dir", str(out)]
    zero = (
        ["--no-group-by-length", "--weight-decay", "0"] if stage == "sft" else ["--beta", "0", "--num-generations", "2"]
    )
    assert main([*args, "--max-steps", "1", "--seed", "0", *zero]) == 0
    config = json.loads((out / "final" / "train_log.json").read_text())["config"]
    assert config["max_steps"] == 1 and config["seed"] == 0
    if stage == "sft":
        assert config["group_by_length"] is False and config["weight_decay"] == 0 and config["save_steps"] == 7
    else:
        assert config["beta"] == 0 and config["num_generations"] == 2


def test_ask_names_crops_as_ids_with_their_regions(tiny_dir, image_path, capsys):
    args = ["ask", str(image_path), "q", "--model", str(tiny_dir), "--policy", "oracle", "--crops", "0,5"]
    assert main([*args, "--max-new-tokens", "3"]) == 0
    assert "crops: [0] top-left, [5] top\n" in capsys.readouterr().out
    assert (
        main(["ask", str(image_path), "q", "--model", str(tiny_dir), "--policy", "low", "--max-new-tokens", "3"]) == 0
    )
    assert "crops: none" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("serve", ["--port PORT           default: 8000", "--host HOST           default: 127.0.0.1"]),
        ("curate", ["--judge {rule,llm}    default: rule", "(default: runs/curate)", "(default: gt)"]),
    ],
)
def test_help_pages_show_defaults(command, shown, capsys):
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(" ".join(s.split()) in text for s in shown)


def test_build_tiny_builds_the_family_asked_for(tmp_path, capsys):
    assert main(["build-tiny", str(tmp_path / "tiny"), "--family", "qwen3_vl"]) == 0
    assert json.loads((tmp_path / "tiny" / "config.json").read_text())["model_type"] == "qwen3_vl"
    assert main(["build-tiny", str(tmp_path / "other"), "--family", "llava"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_a_missing_or_hostile_model_on_a_training_command_exits_2_in_one_line(
    tmp_path, prompts, stage, capsys, monkeypatch
):
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    monkeypatch.chdir(tmp_path)  # ./typo-model is path-like: a folder here, never a hub request
    cases = {
        "runs/nope/final": "model directory runs/nope/final does not exist",
        "/etc/passwd": "/etc/passwd is not a directory",
        "./typo-model": "model directory typo-model does not exist",
        str(not_a_model): "missing config.json",
    }
    for model, message in cases.items():
        args = ["train", stage, "--data", str(prompts), "--model", model, "--output-dir", str(tmp_path / "out")]
        assert main(args) == 2, model
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_a_revision_that_walks_out_of_the_hub_cache_is_refused_before_it_is_read(monkeypatch):
    from awares.errors import ModelLoadError
    from awares.hub import resolve_model

    def read(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr("huggingface_hub.snapshot_download", read)
    for revision in ("../../../../etc/hostname", "/etc/hostname", "main/../../x"):
        with pytest.raises(ModelLoadError, match="is not a branch, tag or commit"):
            resolve_model("Kimhi/AWARES-Qwen2.5-VL-7B", revision)

import json
import re

from awares.cli import main


def write_configs(tmp_path):
    (tmp_path / "base.toml").write_text(
        "train_samples = 8\nmax_steps = 2\nbatch_size = 2\nsave_steps = 2\nlogging_steps = 1\n"
        "[model]\nmax_pixels = 100352\ntext_layers = 1\nvision_layers = 1\n"
    )
    (tmp_path / "ground.toml").write_text(
        "train_samples = 8\nmax_steps = 1\nbatch_size = 2\nlogging_steps = 1\nground = 1.0\nread_warmup = 0\n"
    )
    (tmp_path / "ground-all.toml").write_text('extends = "ground.toml"\ntrain_split = "train-all"\n')
    (tmp_path / "sft.toml").write_text("max_steps = 2\nbatch_size = 2\nsave_steps = 100\n")
    (tmp_path / "grpo.toml").write_text(
        "max_steps = 1\nprompts_per_step = 2\nnum_generations = 2\nmax_new_tokens = 6\n"
    )
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'out_dir = "{tmp_path / "run"}"\nbase = "{tmp_path / "base.toml"}"\nsft = "{tmp_path / "sft.toml"}"\n'
        f'grpo = "{tmp_path / "grpo.toml"}"\n'
        f'ground = ["{tmp_path / "ground.toml"}", "{tmp_path / "ground-all.toml"}"]\n'
        'curate_data = "synthetic:train:6"\neval_data = "synthetic:test:4"\n'
        "max_new_tokens = 4\nkeep_unsolvable = true\n"  # a 2-step base model answers nothing right
    )
    return config


def test_pipeline_runs_every_stage_then_skips_what_is_done(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWARES_HOME", str(tmp_path / "home"))
    config = write_configs(tmp_path)
    assert main(["pipeline", str(config)]) == 0
    run = tmp_path / "run"
    for stage in ("base", "ground", "ground-2", "sft", "grpo"):
        assert (run / stage / "final" / "train_log.json").is_file()
    ground = json.loads((run / "ground" / "final" / "train_log.json").read_text())["config"]
    assert ground["init"] == str(run / "base" / "final") and ground["max_steps"] == 1
    ground_all = json.loads((run / "ground-2" / "final" / "train_log.json").read_text())["config"]
    assert ground_all["init"] == str(run / "ground" / "final") and ground_all["train_split"] == "train-all"
    sft = json.loads((run / "sft" / "final" / "train_log.json").read_text())["config"]
    assert sft["model"] == str(run / "ground-2" / "final")  # every later stage starts from the last grounding
    assert (run / "curate" / "trajectories.jsonl").is_file()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert list(summary) == ["full", "low", "awares", "sft", "oracle"] and summary["full"]["all"]["n"] == 4
    first = capsys.readouterr().out
    assert "base: training" in first and "ground: training" in first and "grpo: training" in first
    stamps = {s: (run / s / "final" / "model.safetensors").stat().st_mtime_ns for s in ("base", "sft", "grpo")}
    times = json.loads((run / "stage_times.json").read_text())
    assert list(times) == ["base", "ground", "ground-2", "curate", "sft", "grpo", "eval"]
    assert all(t > 0 for t in times.values())

    (run / "grpo" / "final" / "train_log.json").unlink()  # as if GRPO had been interrupted before saving
    assert main(["pipeline", str(config)]) == 0
    again = capsys.readouterr().out
    assert (
        "base: using" in again
        and "ground: done, skipped" in again
        and "ground-2: done, skipped" in again
        and "sft: done, skipped" in again
        and "grpo: training" in again
    )
    assert all((run / s / "final" / "model.safetensors").stat().st_mtime_ns == stamps[s] for s in ("base", "sft"))
    assert sum(1 for _ in (run / "eval" / "awares.jsonl").open()) == 4  # evaluation resumed, nothing doubled
    again_times = json.loads((run / "stage_times.json").read_text())
    assert again_times["base"] == times["base"] and again_times["grpo"] > times["grpo"]  # the rerun stage adds


def test_base_model_flag_skips_grounding_a_tomls_keeps_it_and_an_empty_curation_stops_with_a_hint(
    tmp_path, tiny_dir, monkeypatch, capsys
):
    monkeypatch.setenv("AWARES_HOME", str(tmp_path / "home"))
    config = write_configs(tmp_path)
    config.write_text(config.read_text().replace("keep_unsolvable = true", "keep_unsolvable = false"))
    assert main(["pipeline", str(config), "--base-model", str(tiny_dir)]) == 2  # a random model answers nothing
    out, err = capsys.readouterr()
    assert "ground:" not in out and not (tmp_path / "run" / "ground").exists()  # --base-model: grounded already
    assert "curation kept no trajectory of 6 samples" in err and "--base-model" in err and "Traceback" not in err

    # A config's own base_model replaces the base stage only: its grounding stages train on it.
    first_ground = f'ground = ["{tmp_path / "ground.toml"}"]'
    config.write_text(
        re.sub(r"ground = \[.*\]", lambda _: f'{first_ground}\nbase_model = "{tiny_dir}"', config.read_text())
    )
    assert main(["pipeline", str(config)]) == 2
    out = capsys.readouterr().out
    assert f"base: using {tiny_dir}" in out and "ground: training" in out and "base: training" not in out
    ground = json.loads((tmp_path / "run" / "ground" / "final" / "train_log.json").read_text())["config"]
    assert ground["init"] == str(tiny_dir) and not (tmp_path / "run" / "ground-2").exists()

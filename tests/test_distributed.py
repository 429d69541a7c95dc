"""Training on several processes: two CPU processes (gloo) end with the same weights and the
configured effective batch. ``torchrun`` starts them: on the CPU ``accelerate launch`` runs one
process unless MPI is installed, while on GPUs ``accelerate launch --num_processes N`` does the same."""

import json
import os
import subprocess
import sys

import pytest

from awares.models import default_model_dir


def launch(tmp_path, *args):
    """``torchrun --standalone --nproc_per_node 2 -m awares.cli ARGS`` (a free port, one machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*run, "-m", "awares.cli", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def digest(path):
    from transformers import AutoModelForImageTextToText

    from awares.train.common import weights_digest

    return weights_digest(AutoModelForImageTextToText.from_pretrained(path))


def test_sft_and_grpo_on_two_processes_keep_identical_weights_and_the_configured_batch(tmp_path, tiny_dir, prompts):
    (tmp_path / "sft.toml").write_text("max_steps = 3\nbatch_size = 4\nsave_steps = 100\nlogging_steps = 1\n")
    launch(tmp_path, "train", "sft", tmp_path / "sft.toml", "--data", prompts, "--model", tiny_dir,
           "--output-dir", tmp_path / "sft")  # fmt: skip
    log = json.loads((tmp_path / "sft" / "final" / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["effective_batch_size"] == 4  # 2 per process
    digests = log["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] != digest(tiny_dir)  # trained, and alike
    assert digest(tmp_path / "sft" / "final") == digests[0]  # the saved model is the ranks' model

    # GRPO from the shipped policy, sampled at 1.5 so that its rollouts differ in reward (a random model's
    # do not, nor the shipped policy's at temperature 1 on these prompts, and zero advantages would
    # leave the weights alike without any synchronisation).
    policy = default_model_dir("crops")
    (tmp_path / "grpo.toml").write_text(
        "max_steps = 2\nprompts_per_step = 2\nnum_generations = 4\nmax_new_tokens = 16\nlearning_rate = 1e-3\n"
        "temperature = 1.5\n"
    )
    launch(tmp_path, "train", "grpo", tmp_path / "grpo.toml", "--data", prompts, "--model", policy,
           "--output-dir", tmp_path / "grpo")  # fmt: skip
    log = json.loads((tmp_path / "grpo" / "final" / "train_log.json").read_text())
    assert log["world_size"] == 2 and log["prompts_per_process"] == 1
    digests = log["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] != digest(policy)
    assert [r["step"] for r in log["log"]] == [1, 2]  # one log line per step, written by the main process


def test_a_batch_the_processes_cannot_share_is_refused(monkeypatch):
    from awares.errors import ConfigError
    from awares.train.common import per_process

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert per_process(8, "batch_size") == 4
    with pytest.raises(ConfigError, match="cannot be shared evenly by 2 processes"):
        per_process(3, "batch_size")


def test_the_cli_ends_the_process_group_a_launcher_set_up_also_on_an_error(tmp_path):
    # Left to interpreter exit, gloo's threads can abort a finished run (SIGABRT, exit code -6).
    import torch.distributed as dist

    from awares.cli import main

    for args, code in ((["synth", "--split", "test", "--n", "1", "--out", str(tmp_path / "synth")], 0),
                       (["ask", str(tmp_path / "nowhere.png"), "q"], 2)):  # fmt: skip
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{code}'}", rank=0, world_size=1)
        assert main(args) == code
        assert not dist.is_initialized()


def test_a_process_group_that_never_ends_does_not_hold_the_finished_run(tmp_path, monkeypatch, capsys):
    # pytorch/pytorch#75097: destroy_process_group can block on one rank after the other has left.
    import threading

    import torch.distributed as dist

    import awares.cli as cli

    left, codes = threading.Event(), []
    monkeypatch.setattr(cli.os, "_exit", lambda code: (codes.append(code), left.set()))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    destroy = dist.destroy_process_group
    monkeypatch.setattr(dist, "destroy_process_group", lambda: left.wait(60))  # returns once the process "left"
    cli._end_process_group(3, patience_s=1)
    destroy()
    assert codes == [3]  # the command's exit status
    assert "did not end within 1 s; leaving without it" in capsys.readouterr().err

"""Hub ids: what is one, and what happens offline without it in the cache. README's commands that
name models and benchmarks by hub id run in test_readme.py against a hub cache the test builds."""

import os
import subprocess

from awares.cli import main
from awares.hub import is_repo_id

from .conftest import scene


def test_a_hub_id_missing_from_the_cache_offline_exits_2_saying_what_to_set(tmp_path):
    scene().save(tmp_path / "page.png")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}  # read when the hub is imported
    command = ["awares", "ask", str(tmp_path / "page.png"), "q", "--model", "org/not-cached"]  # the console script
    child = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert child.returncode == 2
    assert "HF_HUB_OFFLINE" in child.stderr and "org/not-cached" in child.stderr
    assert "Traceback" not in child.stderr


def test_a_revision_needs_a_hub_id(tmp_path, tiny_dir, capsys):
    scene().save(tmp_path / "page.png")
    assert main(["ask", str(tmp_path / "page.png"), "q", "--model", str(tiny_dir), "--revision", "v1"]) == 2
    assert "needs a hub id" in capsys.readouterr().err


def test_hub_ids_are_org_slash_name_and_never_an_existing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("Kimhi/AWARES-Qwen2.5-VL-7B") and is_repo_id("lmms-lab/DocVQA")
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert not is_repo_id("org/local")  # a folder of that name is meant
    for name in ("model", "a/b/c", "./x/y", "/abs/path", "bad name/x", "org/na--me..."):
        assert not is_repo_id(name), name

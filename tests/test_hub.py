"""Models and Table-1 benchmarks by their hub names, resolved offline from a hub cache the test builds
(the cache's own layout: ``models--ORG--NAME/refs/main`` and ``snapshots/REV/...``)."""

import json
import os
import shutil
import subprocess
import sys

import datasets
import pytest

from awares.cli import main
from awares.data.benchmarks import ROW_TO_FIELDS, TASKS
from awares.hub import is_repo_id

from .conftest import columns, images, scene

MODEL_ID = "awares-test/tiny-vlm"


def cached_repo(hub, repo_type, repo_id, revision="0" * 40, ref="main"):
    """An empty snapshot folder of ``repo_id`` in the hub cache, named by ``ref``."""
    repo = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory, tiny_dir):
    """HF_HOME with the tiny model under ``MODEL_ID`` and each benchmark's copy under lmms-eval's id."""
    home = tmp_path_factory.mktemp("hf_home")
    shutil.copytree(tiny_dir, cached_repo(home / "hub", "model", MODEL_ID), dirs_exist_ok=True)
    for number, task in enumerate(TASKS, start=1):
        copy, _ = ROW_TO_FIELDS[task]
        snapshot = cached_repo(home / "hub", "dataset", copy.repo_id, revision=f"{number:040d}")  # a commit each
        folder = copy.config or "data"
        ds = datasets.Dataset.from_dict({**columns(task), "image": images(2)}).cast_column("image", datasets.Image())
        (snapshot / folder).mkdir()
        ds.to_parquet(str(snapshot / folder / f"{copy.split}-00000-of-00001.parquet"))
        name = copy.config or "default"
        files = f"  data_files:\n  - split: {copy.split}\n    path: {folder}/{copy.split}-*\n"
        (snapshot / "README.md").write_text(f"---\nconfigs:\n- config_name: {name}\n{files}---\n")
    return home


# One process for every command of this module, run with the hub cache's environment (huggingface_hub
# and datasets read it when imported): one interpreter start instead of one per command.
CHILD = """
import contextlib, io, json, sys
from awares.cli import main
done = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    done.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(done))
"""


@pytest.fixture(scope="module")
def runs(hub_home, tmp_path_factory):
    """Each command's ``(exit code, stdout, stderr)``, by name, all run offline in one process."""
    root = tmp_path_factory.mktemp("hub_runs")
    scene().save(root / "page.png")
    page = str(root / "page.png")
    commands = {
        "ask": ["ask", page, "What is written?", "--model", MODEL_ID, "--json"],
        "missing": ["ask", page, "q", "--model", "awares-test/not-cached"],
        "table1": [
            "eval",
            "--table1",
            "--model",
            MODEL_ID,
            "--policy",
            "low",
            "--limit",
            "2",
            "--out",
            str(root / "t1"),
        ],
        "task": ["eval", "--task", "docvqa", "--model", MODEL_ID, "--policy", "full", "--out", str(root / "task")],
    }
    env = {**os.environ, "HF_HOME": str(hub_home), "HF_HUB_OFFLINE": "1", "AWARES_HOME": str(root / "cache")}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(list(commands.values()))],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    return {"root": root, **dict(zip(commands, json.loads(child.stdout.splitlines()[-1])))}


def test_ask_answers_with_a_model_named_by_its_hub_id(runs):
    code, out, err = runs["ask"]
    assert code == 0, err
    result = json.loads(out)
    assert result["policy"] == "crops" and isinstance(result["answer"], str) and result["tokens"]["full"] > 0


def test_a_hub_id_missing_from_the_cache_offline_exits_2_saying_what_to_set(runs):
    code, _, err = runs["missing"]
    assert code == 2
    assert "HF_HUB_OFFLINE" in err and "awares-test/not-cached" in err
    assert "Traceback" not in err


def test_a_revision_needs_a_hub_id(tmp_path, tiny_dir, capsys):
    scene().save(tmp_path / "page.png")
    assert main(["ask", str(tmp_path / "page.png"), "q", "--model", str(tiny_dir), "--revision", "v1"]) == 2
    assert "needs a hub id" in capsys.readouterr().err


def test_every_table1_benchmark_loads_its_cached_hub_copy_with_no_data_folder(runs):
    code, _, err = runs["table1"]
    assert code == 0, err
    out = runs["root"] / "t1"
    for task in TASKS:
        assert (out / task / "low.jsonl").read_text().count("\n") == 2
    table = (out / "table1.md").read_text()
    assert all(f"{name} acc" in table for name in ("ChartQA", "DocVQA", "OCRBench", "POPE", "RealWorldQA", "V*"))


def test_a_single_task_from_the_hub(runs):
    code, out, err = runs["task"]
    assert code == 0, err
    assert "docvqa" in out and (runs["root"] / "task" / "full.jsonl").read_text().count("\n") == 2


def test_hub_ids_are_org_slash_name_and_never_an_existing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("Kimhi/AWARES-Qwen2.5-VL-7B") and is_repo_id("lmms-lab/DocVQA")
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert not is_repo_id("org/local")  # a folder of that name is meant
    for name in ("model", "a/b/c", "./x/y", "/abs/path", "bad name/x", "org/na--me..."):
        assert not is_repo_id(name), name

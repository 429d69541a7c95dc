import json
import os
import signal
import subprocess
import sys
import time

import datasets
import pytest
from PIL import Image

from awares.cli import main
from awares.crops import crop_box, low_res_size
from awares.curate import CurateConfig, GroundTruthOracle, RuleJudge, curate, finalize, label
from awares.curate.pipeline import shard_files
from awares.data import generate, read_jsonl, write_dataset
from awares.models import HFBackend, default_base_dir
from awares.runtime import Engine, RuntimeConfig


@pytest.fixture(scope="module")
def engine():
    return Engine(HFBackend.load(default_base_dir(), device="cpu"), RuntimeConfig(max_new_tokens=4, batch_size=4))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(generate("train", 8, detail_fraction=0.5), tmp_path_factory.mktemp("ds") / "train")


def shard_rows(out, shard=0, num_shards=1):
    path = shard_files(out, shard, num_shards)[0]
    return [json.loads(line) for line in path.read_text().splitlines()]


def curate_args(data, out, *extra):
    return ["curate", "--data", str(data), "--out", str(out), "--max-new-tokens", "4", "--batch-size", "2", *extra]


def test_curate_labels_grounds_and_writes_trajectories(tmp_path, engine, data):
    records, _ = read_jsonl(data)
    summary = curate(records, engine, RuleJudge(), GroundTruthOracle(), CurateConfig(out_dir=str(tmp_path)))
    rows = {r["id"]: r for r in shard_rows(tmp_path)}
    assert summary["samples"] == len(rows) == 8 and summary["errors"] == 0
    assert "crop" in {r["label"] for r in rows.values()}  # the shipped model reads tags at full resolution only
    by_id = {r.id: r for r in records}
    trajectories = [json.loads(line) for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    assert len(trajectories) == sum(summary["trajectories"].values()) == 8 - summary["labels"].get("unsolvable", 0)
    for t in trajectories:
        row, record = rows[t["id"]], by_id[t["id"]]
        assert row["label"] == label(
            RuleJudge(), record.question, record.answers, row["low_answer"], row["full_answer"]
        )
        image = Image.open(record.image)
        roles = [m["role"] for m in t["messages"]]
        parts = [p for m in t["messages"] for p in m["content"] if p["type"] == "image"]
        assert [p["image"] for p in parts] == t["images"]
        assert Image.open(tmp_path / t["images"][0]).size == low_res_size(*image.size)
        assert t["messages"][-1]["content"][0]["text"] == record.answers[0]
        if t["label"] == "direct":
            assert roles == ["system", "user", "assistant"] and len(t["images"]) == 1 and t["boxes"] is None
        else:
            assert roles == ["system", "user", "assistant", "user", "assistant"]
            assert t["messages"][2]["content"][0]["text"] == f"GET_CROPS: {list(t['crops'])}"
            sizes = [Image.open(tmp_path / p).size for p in t["images"][1:]]
            assert sizes == [(crop_box(c, *image.size).width, crop_box(c, *image.size).height) for c in t["crops"]]
            assert row["coverage"] == row["evidence_coverage"] == 1.0  # the crops hold the evidence box
            assert t["boxes"] == row["boxes"] == [list(b.as_tuple()) for b in record.evidence_boxes()]  # for GRPO
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "trajectories.jsonl"), split="train")
    assert len(ds) == len(trajectories) and ds[0]["messages"][0]["role"] == "system"


def test_interrupted_run_resumes_without_duplicates_or_losses(tmp_path, data):
    out = tmp_path / "cur"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "awares.cli", *curate_args(data, out, "--batch-size", "1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    rows_file = shard_files(out, 0, 1)[0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if rows_file.is_file() and len(rows_file.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= len(shard_rows(out)) < 8  # killed part-way
    with rows_file.open("a") as f:
        f.write('{"id": "train-000007", "label": "cro')  # and as if mid-row
    assert main(curate_args(data, out)) == 0
    ids = [r["id"] for r in shard_rows(out)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 8
    assert main(curate_args(data, out)) == 0  # idempotent
    assert len(shard_rows(out)) == 8


def test_shards_split_the_data_and_merge(tmp_path, data):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(curate_args(data, whole)) == 0
    assert main(curate_args(data, split, "--shard", "1/2")) == 0
    partial = json.loads((split / "summary.json").read_text())["samples"]
    assert main(curate_args(data, split, "--shard", "0/2")) == 0
    a, b = shard_rows(split, 0, 2), shard_rows(split, 1, 2)
    assert a and b and partial == len(b) and not {r["id"] for r in a} & {r["id"] for r in b}
    assert (split / "trajectories.jsonl").read_text() == (whole / "trajectories.jsonl").read_text()
    assert main(curate_args(data, split, "--shard", "2")) == 2
    assert main(curate_args(data, split, "--shard", "2/2")) == 2


def test_bad_rows_and_a_dead_judge_are_reported_then_retried(tmp_path, data, capsys):
    ds = write_dataset(generate("train", 4), tmp_path / "ds")
    (ds / "images" / "train-000001.png").unlink()
    out = tmp_path / "cur"
    dead = ["--judge", "llm", "--judge-url", "http://127.0.0.1:9/v1", "--judge-model", "m"]
    assert main(curate_args(ds, out, *dead)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 0 and summary["errors"] == 4
    assert summary["errors_by_stage"] == {"input": 1, "EndpointError": 3}
    assert main(curate_args(ds, out)) == 0  # the rule judge: the three readable records are done now
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 3 and summary["errors_by_stage"] == {"input": 1}


def test_class_balance_and_unsolvable_flag(tmp_path):
    rows_file = shard_files(tmp_path, 0, 1)[0]
    rows_file.parent.mkdir(parents=True)
    labels = ["direct"] * 6 + ["crop"] * 2 + ["unsolvable"]
    with rows_file.open("w") as f:
        for i, tag in enumerate(labels):
            row = {"id": f"r{i}", "kind": "detail", "label": tag, "messages": [], "images": []}
            f.write(json.dumps(row | ({"crops": ["0"], "coverage": 1.0} if tag != "direct" else {})) + "\n")
    summary = finalize(tmp_path, CurateConfig(out_dir=str(tmp_path)))
    assert summary["trajectories"] == {"direct": 6, "crop": 2} and summary["labels"]["unsolvable"] == 1
    assert summary["crop_ids"] == {"0": 2} and summary["coverage"]["1.0"] == 2  # the kept calls only
    summary = finalize(tmp_path, CurateConfig(out_dir=str(tmp_path), direct_ratio=1.5, keep_unsolvable=True))
    assert summary["trajectories"] == {"direct": 5, "crop": 2, "unsolvable": 1}  # ceil(1.5 * 3) direct
    assert summary["coverage"] == {"1.0": 3, "0.9-1": 0, "0.5-0.9": 0, "<0.5": 0}

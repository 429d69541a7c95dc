import json
import shutil

from awares.cli import main
from awares.data import generate, write_dataset


def eval_args(data, model, out, *extra):
    return ["eval", "--data", str(data), "--model", str(model), "--out", str(out), "--max-new-tokens", "3", *extra]


def test_eval_writes_results_table_and_plot_and_resumes(tmp_path, tiny_dir, capsys):
    data = write_dataset(generate("test", 6), tmp_path / "ds")
    out = tmp_path / "eval"
    args = eval_args(data, tiny_dir, out, "--batch-size", "4")
    assert main(args) == 0
    table = capsys.readouterr().out
    for policy in ["full", "low", "crops", "oracle"]:
        assert f"| {policy} | 6 |" in table
        assert len((out / f"{policy}.jsonl").read_text().splitlines()) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["full"]["all"]["rtr"] == 1.0
    assert 0.2 < summary["low"]["all"]["rtr"] < 0.3
    oracle = summary["oracle"]
    assert oracle["global"]["call_rate"] == 0 and oracle["detail"]["call_rate"] == 1
    assert oracle["detail"]["evidence_hit_rate"] == 1.0  # the oracle's crops cover the plate
    assert oracle["detail"]["crop_pixels_per_call"] > 0 and summary["full"]["all"]["evidence_hit_rate"] is None
    assert "| hit rate detail | hit rate global | crop px/call |" in (out / "table.md").read_text()
    assert (out / "pareto.png").stat().st_size > 1000 and (out / "table.md").is_file()

    assert main(args + ["--policy", "full"]) == 0  # resume: nothing is redone or duplicated
    assert len((out / "full.jsonl").read_text().splitlines()) == 6
    capsys.readouterr()
    assert main(args + ["--policy", "crops", "--name", "sft"]) == 0  # another model joins the table
    table = capsys.readouterr().out
    assert "| sft | 6 |" in table and "| full | 6 |" in table and table.index("| low |") < table.index("| sft |")
    assert main(args + ["--name", "x"]) == 2  # a name for several policies is refused


def test_eval_refuses_to_mix_results_of_another_model_or_setting(tmp_path, tiny_dir, capsys):
    data = write_dataset(generate("test", 2), tmp_path / "ds")
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    out = tmp_path / "eval"
    args = eval_args(data, model, out, "--policy", "low")
    assert main(args) == 0
    rows = (out / "low.jsonl").read_text()
    assert main(args + ["--low-res-scale", "0.25"]) == 2
    assert "low_res_scale: 0.5 then, 0.25 now" in capsys.readouterr().err
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # retrained in place: same directory
    assert main(args) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert (out / "low.jsonl").read_text() == rows  # nothing lost, nothing mixed in
    record = out / "low.run.json"
    record.write_text("{cut")  # results whose run is unreadable or unknown cannot be extended either
    assert main(args) == 2
    assert "no record of the run" in capsys.readouterr().err
    record.unlink()
    assert main(args) == 2
    assert "no record of the run" in capsys.readouterr().err
    assert main(eval_args(data, model, tmp_path / "fresh", "--policy", "low")) == 0


def test_eval_skips_bad_rows_and_unreadable_images(tmp_path, tiny_dir, capsys):
    data = write_dataset(generate("test", 4), tmp_path / "ds")
    with (data / "data.jsonl").open("a") as f:
        f.write("{broken\n")
    (data / "images" / "test-000001.png").write_bytes(b"not a png")
    out = tmp_path / "eval"
    assert main(eval_args(data, tiny_dir, out, "--policy", "low")) == 0
    captured = capsys.readouterr()
    assert "skipped 1 bad row(s)" in captured.err
    (error,) = [json.loads(line) for line in (out / "data.errors.jsonl").read_text().splitlines()]
    assert error["line"] == 5 and "Expecting property name" in error["reason"]
    ids = [json.loads(line)["id"] for line in (out / "low.jsonl").read_text().splitlines()]
    assert ids == ["test-000000", "test-000002", "test-000003"]
    assert "test-000001" in (out / "low.errors.jsonl").read_text()


def test_evidence_hit_needs_the_crops_of_a_call_to_cover_nine_tenths_of_the_evidence():
    from awares.data import Record
    from awares.evaluate.harness import evidence_hit
    from awares.runtime import Result

    record = Record("r", "x.png", "q", ["a"], [(196, 0, 280, 84)], "detail")  # across the midline of 448 px

    def hit(crops):
        return evidence_hit(record, Result("crops", "a", [], crops=crops, image_size=(448, 336)), 100)

    assert hit(("5",)) and hit(("0", "1")) and hit(("all",))
    assert not hit(("0",)) and not hit(("3",)) and hit(()) is None
    record.evidence = [(200, 0, 226, 84)]  # 24 of its 26 columns (92%) lie in quadrant 0
    assert hit(("0",)) and not hit(("1",))


def test_the_table_lists_numbered_runs_in_their_order(tmp_path, tiny_dir, capsys):
    data = write_dataset(generate("test", 2), tmp_path / "ds")
    out = tmp_path / "eval"
    assert main(eval_args(data, tiny_dir, out, "--policy", "full")) == 0
    for name in ("step-100", "step-25"):  # a GRPO run's steps (train/select.py), as numbers order them
        for suffix in (".jsonl", ".run.json"):
            shutil.copy(out / f"full{suffix}", out / f"{name}{suffix}")
    capsys.readouterr()
    assert main(eval_args(data, tiny_dir, out, "--policy", "full")) == 0
    table = capsys.readouterr().out
    assert table.index("| full |") < table.index("| step-25 |") < table.index("| step-100 |")

"""The Table-1 benchmarks: loaders for their Hugging Face schemas, official metrics, --table1."""

import json

import datasets
import pytest
from PIL import Image

from awares.cli import main
from awares.data.benchmarks import TASKS, load_benchmark
from awares.evaluate import evaluate, score, task_metrics
from awares.evaluate.tasks import HME, relaxed_correctness, vstar_letter
from awares.runtime import Engine, RuntimeConfig

from .conftest import QUESTION_RWQA, Scripted, columns, images


def save(task, root):
    """The fixture as lmms-eval's copy is stored: save_to_disk (a DatasetDict for DocVQA), one
    parquet file, or a repository folder of parquet files."""
    ds = datasets.Dataset.from_dict({**columns(task), "image": images(2)}).cast_column("image", datasets.Image())
    path = root / task
    if task == "docvqa":
        datasets.DatasetDict({"validation": ds}).save_to_disk(str(path))
    elif task in ("chartqa", "vstar"):
        ds.save_to_disk(str(path))
    else:
        (path / "data").mkdir(parents=True)
        ds.to_parquet(str(path / "data" / "test-00000-of-00001.parquet"))
    return path


@pytest.mark.parametrize("task", TASKS)
def test_each_benchmark_loads_from_its_schema_with_lmms_evals_prompt(tmp_path, task):
    records, errors = load_benchmark(task, save(task, tmp_path))
    assert errors == [] and len(records) == 2
    assert Image.open(records[0].image).size == (224, 196)
    expected = {
        "chartqa": ("Peak value?\nAnswer the question using a single word or phrase.", ["10"], "human_test"),
        "docvqa": ("Who signed?\nAnswer the question using a single word or phrase.", ["John", "Jon"], None),
        "ocrbench": ("What is written?", ["hello"], "Regular Text Recognition"),
        "pope": ("Is there a dog in the image?\nAnswer the question using a single word or phrase.", ["yes"],
                 "adversarial"),
        "realworldqa": (QUESTION_RWQA, ["B"], None),
        "vstar": ("What is the color of the cup?\nA. red\nB. blue\nC. green\nD. white\n"
                  "Answer with the option's letter from the given choices directly.", ["B"], "direct_attributes"),
    }[task]  # fmt: skip
    assert (records[0].question, records[0].answers, records[0].kind) == expected
    if task in ("docvqa", "pope", "vstar"):  # the copy's own question ids
        assert records[0].id == {"docvqa": "101", "pope": "7", "vstar": "q1"}[task]


def test_official_metrics_on_hand_computed_cases():
    assert relaxed_correctness("10.4", "10") and not relaxed_correctness("10.6", "10")  # 5% of 10
    assert relaxed_correctness("25%", "0.25") and relaxed_correctness("Yes", "yes") and not relaxed_correctness("", "0")
    assert score("chartqa", "9.6", ["10"]) == 1.0 and score("chartqa", "ten", ["10"]) == 0.0
    assert score("docvqa", "Jon", ["John"]) == pytest.approx(0.75) and score("docvqa", "abc", ["xyz"]) == 0.0
    assert score("docvqa", "jOhN ", ["John", "Jon"]) == 1.0
    assert score("ocrbench", "The sign says HELLO there", ["hello"], "Regular Text Recognition") == 1.0
    assert score("ocrbench", "x ^ 2", ["x^2"], HME) == 1.0 and score("ocrbench", "X^2", ["X^2"], HME) == 0.0
    assert score("pope", " Yes", ["yes"]) == 1.0 and score("pope", "Yes, there is.", ["yes"]) == 0.0
    assert score("realworldqa", "B", ["B"], question=QUESTION_RWQA) == 1.0
    assert score("realworldqa", "The blue car.", ["B"], question=QUESTION_RWQA) == 1.0
    assert score("realworldqa", "red", ["B"], question=QUESTION_RWQA) == 0.0
    assert [vstar_letter(t) for t in ["(B)", "The answer is C", "a.", "D", "none"]] == ["B", "C", "A", "D", None]
    rows = [{"answer": p, "answers": [g], "correct": float(p == g)}
            for p, g in [("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no"), ("yes", "yes")]]  # fmt: skip
    pope = task_metrics("pope", rows)
    assert pope["accuracy"] == pytest.approx(60.0) and pope["precision"] == pytest.approx(200 / 3)
    assert pope["recall"] == pytest.approx(200 / 3) and pope["f1"] == pytest.approx(200 / 3)
    assert pope["yes_ratio"] == pytest.approx(0.6)


def test_evaluate_scores_a_benchmark_with_its_metric(tmp_path, backend):
    records, _ = load_benchmark("pope", save("pope", tmp_path))
    engine = Engine(Scripted(backend, ["Yes", "Yes"]), RuntimeConfig(max_new_tokens=2, batch_size=2))
    summaries, table = evaluate({"full": ("full", engine)}, records, tmp_path / "out", batch_size=2, task="pope")
    metrics = summaries["full"]["all"]["task_metrics"]
    assert metrics["accuracy"] == 50.0 and metrics["precision"] == 50.0 and metrics["recall"] == 100.0
    assert summaries["full"]["all"]["accuracy"] == 50.0 and "| full | 2 | 50.0 |" in table
    assert json.loads((tmp_path / "out" / "full.run.json").read_text())["task"] == "pope"


def test_table1_runs_every_benchmark_folder_and_prints_the_papers_layout(tmp_path, tiny_dir, capsys):
    root = tmp_path / "bench"
    for task in TASKS:
        save(task, root)
    args = ["eval", "--table1", "--data", root, "--out", tmp_path / "out", "--model", tiny_dir, "--policy", "full,low"]
    assert main([str(a) for a in args + ["--max-new-tokens", "2"]]) == 0
    table = (tmp_path / "out" / "table1.md").read_text()
    assert table.splitlines()[0] == (
        "| policy | ChartQA acc | ChartQA RTR | DocVQA acc | DocVQA RTR | OCRBench acc | OCRBench RTR | POPE acc | "
        "POPE RTR | RealWorldQA acc | RealWorldQA RTR | V* acc | V* RTR | avg acc | avg RTR |"
    )
    full, low = table.splitlines()[2:4]
    assert full.startswith("| full |") and full.endswith("| 1.000 |") and low.startswith("| low |")
    assert table in capsys.readouterr().out
    assert all((tmp_path / "out" / t / "summary.json").is_file() for t in TASKS)

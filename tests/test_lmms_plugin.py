"""The lmms-eval plugin, driven with lmms-eval's own ``Instance``s on the tiny model."""

import json

import pytest

from awares.runtime import Engine, RuntimeConfig

from .conftest import scene

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is installed with --no-deps (see .ci/run)")


def instance(doc_id, question, max_new_tokens=4, task="chartqa"):
    from lmms_eval.api.instance import Instance

    arguments = (question, {"max_new_tokens": max_new_tokens}, lambda doc: doc["images"], doc_id, task, "test")
    return Instance("generate_until", arguments, idx=0, metadata={"task": task, "doc_id": doc_id, "repeats": 1})


def test_lmms_eval_finds_the_plugin_and_it_answers_in_batches_with_a_log_of_crops_and_rtr(tmp_path, tiny_dir):
    from lmms_eval.models import get_model

    model_class = get_model("awares")  # through the lmms_eval.models entry point
    model = model_class.create_from_arg_string(f"pretrained={tiny_dir},log_dir={tmp_path},max_new_tokens=8",
                                               {"batch_size": 2, "device": "cpu"})  # fmt: skip
    docs = [{"images": [scene(448, 336, i)]} for i in range(3)] + [{"images": []}, {"images": [scene(), scene()]}]
    model.task_dict = {"chartqa": {"test": docs}}
    requests = [instance(i, f"What is written? {i}", max_new_tokens=4 + i % 2) for i in range(5)]
    answers = model.generate_until(requests)

    engine = Engine(model.engine.backend, RuntimeConfig(max_new_tokens=4))
    expected = [engine.answer(docs[0]["images"][0], "What is written? 0").answer]
    engine.config.max_new_tokens = 5
    expected.append(engine.answer(docs[1]["images"][0], "What is written? 1").answer)
    assert answers[:2] == expected and answers[3:] == ["", ""]
    rows = {r["doc_id"]: r for r in map(json.loads, (tmp_path / "chartqa.jsonl").read_text().splitlines())}
    assert sorted(rows) == [0, 1, 2, 3, 4]
    assert {"answer", "crops", "rtr", "tokens", "seconds"} <= set(rows[0]) and 0 < rows[0]["rtr"] <= 2.5
    assert "one image per question" in rows[3]["error"] and rows[4]["error"].startswith("2 images")
    with pytest.raises(NotImplementedError):
        model.loglikelihood(requests)

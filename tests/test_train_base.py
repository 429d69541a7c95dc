import json

import pytest
from PIL import Image

from awares.crops import Box, boxes_to_crops, low_res_view
from awares.data import generate
from awares.errors import ConfigError
from awares.models import load_processor
from awares.models.families import FAMILIES
from awares.protocol import turn1_messages
from awares.train.base import (
    GROUND_QUESTION,
    BaseTrainConfig,
    GroundingDataset,
    PooledLengthSampler,
    ViewDataset,
    train_base,
    training_records,
    view_pixels,
    zoom_box,
)
from awares.train.collate import IGNORE_INDEX, ChatCollator, assistant_spans

from .conftest import scene


def test_labels_cover_exactly_the_assistant_answers(tiny_dir):
    processor = load_processor(tiny_dir)
    conversations = [
        [
            *turn1_messages(scene(), "What colour?", None),
            {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
        ],
        [
            *turn1_messages(scene(336, 448), "Code?"),
            {"role": "assistant", "content": [{"type": "text", "text": "47 is it"}]},
        ],
    ]
    batch = ChatCollator(processor, FAMILIES["qwen2_5_vl"])(conversations)
    tok = processor.tokenizer
    decoded = [tok.decode(row[row != IGNORE_INDEX]) for row in batch["labels"]]
    assert decoded == ["red<|im_end|>", "47 is it<|im_end|>"]
    assert not (batch["labels"][batch["input_ids"] == processor.image_token_id] != IGNORE_INDEX).any()


def test_assistant_spans_handles_several_turns_and_an_unclosed_one():
    start, end = [1, 2], 9
    ids = [5, 1, 2, 7, 7, 9, 3, 1, 2, 8, 9, 4, 1, 2, 6]
    assert assistant_spans(ids, start, end) == [(3, 6), (9, 11), (14, 15)]


def _detail_record(tmp_path):
    from awares.data import Record

    sample = next(s for s in generate("test", 20) if s.kind == "detail")
    sample.image.save(tmp_path / "s.png")
    evidence = [b.as_tuple() for b in sample.evidence]
    return sample, Record(sample.id, str(tmp_path / "s.png"), sample.question, sample.answers, evidence, "detail")


def test_views_include_crops_and_zooms_and_low_res_only_when_answerable(tmp_path):
    from awares.data import Record

    sample, record = _detail_record(tmp_path)
    config = BaseTrainConfig(view_full=1, view_low=1, view_crop=1, view_zoom=0.25, curriculum=0, task_warmup=0)
    dataset = ViewDataset([record], config)
    views = [dataset[0][0]["content"][0]["image"] for _ in range(60)]
    sizes = {v.size for v in views}
    assert sample.image.size in sizes and len(sizes) >= 3
    assert all(sw % 28 == 0 and sh % 28 == 0 for sw, sh in sizes)  # never resampled by the processor
    low = low_res_view(sample.image).tobytes()
    assert all(v.tobytes() != low for v in views)  # a detail question is never asked about the half-res view
    glob = Record("g", record.image, "How many shapes?", ["1"], [(0, 0, 56, 56)], "global")
    global_views = ViewDataset([glob], config)
    assert any(global_views[0][0]["content"][0]["image"].tobytes() == low for _ in range(30))


def test_curriculum_starts_with_detail_questions_and_one_token_zooms(tmp_path):
    from awares.data import Record

    _, record = _detail_record(tmp_path)
    other = Record("g", record.image, "How many shapes?", ["1"], [(0, 0, 50, 50)], "global")
    config = BaseTrainConfig(
        read_warmup=0.1, curriculum=0.4, task_warmup=0.4, view_zoom_start=0.8, view_zoom=0.2, zoom_max_cells=8
    )
    dataset = ViewDataset([other, record], config)
    dataset.progress = 0.0  # reading warm-up: zooms on the one token that holds the plate's code
    assert dataset.weights() == ([0.0, 0.0, 0.0, 1.0], -1)
    zooms = [dataset[0][0]["content"][0]["image"] for _ in range(5)]
    (plate,) = record.evidence_boxes()
    middle = Image.open(record.image).crop((plate.x0 + 28, plate.y0 + 28, plate.x0 + 56, plate.y0 + 56))
    assert all(z.tobytes() == middle.tobytes() for z in zooms)
    dataset.progress = 0.1  # the ramp begins
    weights, cells = dataset.weights()
    assert weights[3] == 0.8 and cells == -1 and abs(sum(weights) - 1) < 1e-9
    assert {dataset[i][0]["content"][1]["text"] for i in [0, 1, 0, 1]} == {record.question}  # detail only
    dataset.progress = 0.5
    weights, cells = dataset.weights()
    assert abs(weights[3] - 0.2) < 1e-9 and cells == 8
    assert abs(weights[0] / weights[1] - 0.45 / 0.25) < 1e-9
    assert {dataset[i][0]["content"][1]["text"] for i in [0, 1]} == {record.question, "How many shapes?"}


def test_grounding_asks_which_crop_holds_the_plate_on_the_half_resolution_view(tmp_path):
    from awares.data import Record

    sample, record = _detail_record(tmp_path)
    other = Record("g", record.image, "How many shapes?", ["1"], [(0, 0, 56, 56)], "global")
    dataset = ViewDataset([record, other], BaseTrainConfig(read_warmup=0.2, task_warmup=0, ground=1.0))
    dataset.progress = 0.1  # reading warm-up: no grounding yet
    assert dataset[0][0]["content"][1]["text"] == record.question
    dataset.progress = 0.5
    (user, answer) = dataset[0]
    view, question = user["content"][0]["image"], user["content"][1]["text"]
    assert question == GROUND_QUESTION and view.tobytes() == low_res_view(sample.image).tobytes()
    (crop,) = boxes_to_crops(sample.evidence, *sample.image.size).crop_ids
    assert answer["content"][0]["text"] == crop == sample.meta["target"]
    assert dataset[1][0]["content"][1]["text"] == "How many shapes?"  # global questions are not grounded
    dataset.config.ground = 0.0
    assert dataset[0][0]["content"][1]["text"] == record.question


def test_grounding_warm_up_asks_only_the_grounding_question_about_detail_records(tmp_path):
    from awares.data import Record

    sample, record = _detail_record(tmp_path)
    other = Record("g", record.image, "How many shapes?", ["1"], [(0, 0, 56, 56)], "global")
    dataset = GroundingDataset([other, record, other], BaseTrainConfig())
    assert len(dataset) == 1
    (user, answer) = dataset[0]
    assert user["content"][1]["text"] == GROUND_QUESTION
    assert user["content"][0]["image"].tobytes() == low_res_view(sample.image).tobytes()
    assert answer["content"][0]["text"] == sample.meta["target"]


def test_pooled_length_sampler_batches_views_of_similar_size(tmp_path):
    config = BaseTrainConfig.from_toml("configs/ground.toml")  # grounding, reading and global questions
    dataset = ViewDataset(training_records(config, tmp_path, samples=64), config)
    draws = list(PooledLengthSampler(dataset, batch_size=8, pool=32, seed=1))
    assert len(draws) == 64 and {d.view for d in draws} >= {"ground", "full"}
    assert sorted(d.record.id for d in draws) == sorted(r.id for r in dataset.records)  # each once an epoch
    pixels = [view_pixels(d) for d in draws]
    for d, n in zip(draws[:16], pixels):  # the sort key is the size of the view the example shows
        width, height = dataset[d][0]["content"][0]["image"].size
        assert width * height == n
    batches = [pixels[i : i + 8] for i in range(0, 64, 8)]
    for pool in (batches[:4], batches[4:]):  # the batches of a pool are runs of its sorted sizes
        ranges = sorted((min(b), max(b)) for b in pool)
        assert all(high <= low for (_, high), (low, _) in zip(ranges, ranges[1:]))

    def padding(batches):
        return sum(len(b) * max(b) - sum(b) for b in batches) / sum(len(b) * max(b) for b in batches)

    shuffled = [view_pixels(dataset.draw(i)) for i in range(64)]
    assert padding(batches) < 0.5 * padding([shuffled[i : i + 8] for i in range(0, 64, 8)])


def test_length_pool_trains_resumes_and_must_fill_whole_batches(tmp_path):
    config = _small_run(tmp_path, length_pool=4, save_steps=2)
    log = json.loads((train_base(config) / "train_log.json").read_text())
    assert log["config"]["length_pool"] == 4 and [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2]
    config.max_steps = 3
    log = json.loads((train_base(config) / "train_log.json").read_text())  # resumes from checkpoint-2
    assert log["resumed_from"] == "checkpoint-2" and [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2, 3]
    (tmp_path / "base.toml").write_text("batch_size = 8\nlength_pool = 12\n")
    with pytest.raises(ConfigError, match=r"length_pool must be 0 or a multiple of batch_size \(8\), not 12"):
        BaseTrainConfig.from_toml(tmp_path / "base.toml")


def test_zoom_box_stays_on_the_grid_and_inside_the_image():
    assert zoom_box([Box(500, 10, 512, 20)], 560, 336, margin_cells=2).as_tuple() == (420, 0, 560, 84)
    assert zoom_box([Box(0, 0, 12, 10)], 280, 280, margin_cells=1).as_tuple() == (0, 0, 56, 56)
    assert zoom_box([Box(14, 28, 26, 38)], 280, 280, margin_cells=0).as_tuple() == (0, 28, 28, 56)  # one token


def _small_run(tmp_path, **overrides) -> BaseTrainConfig:
    """A two-step base run of a one-layer model on 8 samples, logging every step."""
    model = {"max_pixels": 128 * 28 * 28, "text_layers": 1, "vision_layers": 1}
    settings = {"train_samples": 8, "max_steps": 2, "batch_size": 2, "logging_steps": 1, "model": model}
    return BaseTrainConfig(output_dir=str(tmp_path / "run"), **{**settings, **overrides})


def test_train_base_runs_saves_and_resumes(tmp_path):
    config = _small_run(tmp_path, save_steps=2)
    final = train_base(config)
    assert (final / "model.safetensors").is_file() and (final / "preprocessor_config.json").is_file()
    log = json.loads((final / "train_log.json").read_text())
    assert log["config"]["max_steps"] == 2 and log["resumed_from"] is None
    assert [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    config.max_steps = 3
    train_base(config)  # resumes from checkpoint-2 and runs one more step
    log = json.loads((final / "train_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-2"
    assert [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2, 3]


def test_grounding_warm_up_runs_first_with_a_constant_rate_and_the_main_run_starts_from_it(tmp_path):
    config = _small_run(tmp_path, detail_fraction=1.0, ground_steps=3, warmup_steps=1, ground_learning_rate=2e-4)
    final = train_base(config)
    warm_up = tmp_path / "run" / "ground" / "final"
    log = json.loads((warm_up / "train_log.json").read_text())
    rates = [e["learning_rate"] for e in log["log_history"] if "loss" in e]
    assert rates[0] < 2e-4 and rates[1:] == [2e-4, 2e-4]  # constant after the one warm-up step
    main = json.loads((final / "train_log.json").read_text())
    assert [e["step"] for e in main["log_history"] if "loss" in e] == [1, 2]
    assert (final / "model.safetensors").read_bytes() != (warm_up / "model.safetensors").read_bytes()
    stamp = (warm_up / "model.safetensors").stat().st_mtime_ns
    config.max_steps = 3
    train_base(config)  # resumes the main run; the finished warm-up is not run again
    assert (warm_up / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((final / "train_log.json").read_text())["resumed_from"] == "checkpoint-2"


def test_init_trains_a_trained_base_further_with_the_configured_schedule(tmp_path):
    first = train_base(_small_run(tmp_path / "a"))
    config = _small_run(tmp_path / "b", init=str(first), lr_scheduler="constant_with_warmup", warmup_steps=0)
    final = train_base(config)
    assert not (tmp_path / "b" / "run" / "init").exists()  # no fresh model is built
    log = json.loads((final / "train_log.json").read_text())
    assert [e["learning_rate"] for e in log["log_history"] if "loss" in e] == [config.learning_rate] * 2
    assert load_processor(final).tokenizer.get_vocab() == load_processor(first).tokenizer.get_vocab()
    assert (final / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()


def test_init_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    from awares.cli import main

    with pytest.raises(ConfigError, match="no checkpoint there"):
        train_base(_small_run(tmp_path, init=str(tmp_path / "missing")))
    assert main(["train", "base", "--init", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint there" in err and "Traceback" not in err


def test_one_data_worker_trains_the_same_weights_as_the_main_process(tmp_path):
    first = train_base(_small_run(tmp_path / "a"))
    no_curriculum = {"init": str(first), "read_warmup": 0.0, "curriculum": 0.0, "task_warmup": 0.0, "ground": 0.5}
    digests = []
    for workers in (0, 1):  # 6 steps of 2 over 8 samples: the worker's random state runs on into epoch 2
        config = _small_run(tmp_path / f"w{workers}", max_steps=6, workers=workers, **no_curriculum)
        log = json.loads((train_base(config) / "train_log.json").read_text())
        digests.append(log["rank_weight_digests"])
    assert digests[0] == digests[1]


def test_data_workers_with_a_curriculum_fail_at_load(tmp_path):
    (tmp_path / "base.toml").write_text("workers = 1\nread_warmup = 0.2\n")
    with pytest.raises(ConfigError, match="workers > 0 needs"):
        BaseTrainConfig.from_toml(tmp_path / "base.toml")


def test_an_unknown_lr_scheduler_fails_at_load(tmp_path):
    (tmp_path / "base.toml").write_text('lr_scheduler = "constnat"\n')
    with pytest.raises(ConfigError, match="lr_scheduler must be one of"):
        BaseTrainConfig.from_toml(tmp_path / "base.toml")


def test_cli_trains_a_given_base_further_for_the_given_steps(tmp_path, capsys):
    from awares.cli import main

    first = train_base(_small_run(tmp_path / "a"))
    (tmp_path / "ground.toml").write_text("train_samples = 8\nbatch_size = 2\nlogging_steps = 1\nmax_steps = 50\n")
    out = tmp_path / "b"
    assert main(["train", "base", str(tmp_path / "ground.toml"), "--init", str(first), "--max-steps", "1",
                 "--output-dir", str(out)]) == 0  # fmt: skip
    log = json.loads((out / "final" / "train_log.json").read_text())
    assert log["config"]["init"] == str(first) and log["config"]["max_steps"] == 1
    assert [e["step"] for e in log["log_history"] if "loss" in e] == [1]

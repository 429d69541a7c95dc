import json

from awares.crops import VisionGrid
from awares.models import load_processor
from awares.models.families import FAMILIES
from awares.train.collate import ChatCollator
from awares.train.sft import SFTConfig, TrajectoryDataset, train_sft


def test_labels_cover_exactly_the_assistant_turns_and_weight_the_tool_call(tiny_dir, trajectories):
    processor = load_processor(tiny_dir)
    conversation = TrajectoryDataset(trajectories)[1]  # a crop trajectory: two images
    batch = ChatCollator(processor, FAMILIES["qwen2_5_vl"], call_weight=5.0)([conversation])
    ids, labels, weights = batch["input_ids"][0], batch["labels"][0], batch["loss_weights"][0]
    spans, current = [], []
    for i in range(len(ids)):
        if labels[i] != -100:
            current.append(i)
        elif current:
            spans.append(current)
            current = []
    answer = conversation[-1]["content"][0]["text"]
    texts = [processor.tokenizer.decode(ids[s]) for s in spans]
    assert texts == ["GET_CROPS: ['0']<|im_end|>", f"{answer}<|im_end|>"]
    assert set(weights[spans[0]].tolist()) == {5.0} and set(weights[spans[1]].tolist()) == {1.0}
    assert weights.sum() == 5 * len(spans[0]) + len(spans[1])  # zero everywhere else
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grid = batch["image_grid_thw"]
    assert grid.shape[0] == 2 and (ids == pad).sum() == int((grid.prod(dim=1) // 4).sum())
    assert batch["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())


def test_crop_weight_falls_on_the_crop_id_tokens_only(tiny_dir, trajectories):
    processor = load_processor(tiny_dir)
    collator = ChatCollator(processor, FAMILIES["qwen2_5_vl"], call_weight=5.0, crop_weight=25.0)
    tok = processor.tokenizer
    for call, ids in [
        ("GET_CROPS: ['0']", ["0"]),
        ("GET_CROPS: ['3', '5']", ["3", "5"]),
        ("GET_CROPS: ['all']", ["all"]),
    ]:
        conversation = [*TrajectoryDataset(trajectories)[1]]
        conversation[-3] = {"role": "assistant", "content": [{"type": "text", "text": call}]}
        batch = collator([conversation])
        heavy = batch["loss_weights"][0] == 25.0
        assert tok.decode(batch["input_ids"][0][heavy]).replace(" ", "") == "".join(ids)
        light = batch["loss_weights"][0] == 5.0
        assert tok.decode(batch["input_ids"][0][light | heavy]) == f"{call}<|im_end|>"


def test_group_by_length_trains_on_batches_of_similar_visual_length(tmp_path, tiny_dir, trajectories):
    dataset = TrajectoryDataset(trajectories)
    grid = VisionGrid.from_processor(load_processor(tiny_dir))
    lengths = dataset.visual_tokens(grid)
    for i, length in enumerate(lengths):  # the sort key is the visual tokens the collator will hold
        images = [p["image"] for m in dataset[i] for p in m["content"] if p["type"] == "image"]
        assert length == sum(grid.tokens(*image.size) for image in images)
    assert lengths[1] > lengths[0]  # the crop trajectory holds the crop's tokens too
    config = SFTConfig(
        data=str(trajectories), model=str(tiny_dir), output_dir=str(tmp_path / "sft"), max_steps=2, batch_size=2
    )
    config.group_by_length, config.logging_steps = True, 1
    log = json.loads((train_sft(config) / "train_log.json").read_text())
    assert log["config"]["group_by_length"] and [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2]


def test_a_rerun_resumes_from_the_newest_checkpoint_past_strays(tmp_path):
    from awares.train.common import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for name in ("checkpoint-2", "checkpoint-10", "checkpoint-30.bak", "checkpoint-x"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-10"

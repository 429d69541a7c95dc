import json

import pytest
import torch
from safetensors.torch import load_file

from awares.crops import extract_crops, low_res_view
from awares.curate import ImageStore, trajectory
from awares.data.synthetic import generate
from awares.errors import InputError
from awares.models import HFBackend, load_processor
from awares.train.collate import ChatCollator
from awares.train.sft import SFTConfig, TrajectoryDataset, train_sft


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    """A direct and a crop trajectory per sample, written like ``awares curate`` writes them."""
    root = tmp_path_factory.mktemp("traj")
    store = ImageStore(root)
    with (root / "trajectories.jsonl").open("w") as f:
        for i, s in enumerate(generate("train", 4)):
            crops = extract_crops(s.image, ["0"]) if i % 2 else None
            row = trajectory(store, low_res_view(s.image), s.question, s.answers[0], crops, ("0",) if crops else ())
            f.write(json.dumps({"id": s.id, **row}) + "\n")
    return root / "trajectories.jsonl"


def test_labels_cover_exactly_the_assistant_turns_and_weight_the_tool_call(tiny_dir, trajectories):
    processor = load_processor(tiny_dir)
    conversation = TrajectoryDataset(trajectories)[1]  # a crop trajectory: two images
    batch = ChatCollator(processor, call_weight=5.0)([conversation])
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


def sft_config(out, model, data, **overrides):
    return SFTConfig(data=str(data), model=str(model), output_dir=str(out), save_steps=100, **overrides)


def test_a_few_steps_reduce_the_loss(tmp_path, tiny_dir, trajectories):
    config = sft_config(
        tmp_path / "sft",
        tiny_dir,
        trajectories,
        max_steps=12,
        batch_size=4,
        learning_rate=2e-3,
        warmup_ratio=0.0,
        logging_steps=1,
    )
    final = train_sft(config)
    losses = [e["loss"] for e in json.loads((final / "train_log.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    HFBackend.load(final, device="cpu")  # a plain checkpoint the runtime loads


def test_lora_with_a_frozen_vision_tower_changes_only_the_language_model(tmp_path, tiny_dir, trajectories):
    config = sft_config(
        tmp_path / "lora",
        tiny_dir,
        trajectories,
        max_steps=2,
        batch_size=2,
        learning_rate=1e-2,
        lora=True,
        freeze_vision=True,
    )
    final = train_sft(config)
    before, after = load_file(tiny_dir / "model.safetensors"), load_file(final / "model.safetensors")
    assert set(before) == set(after)  # merged: no adapter weights left
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.") and "_proj" in k for k in changed)  # LLM attention


def test_trajectories_with_missing_images_are_reported_and_skipped(tmp_path, trajectories):
    lines = trajectories.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["messages"][1]["content"][0]["image"] = "images/nope.png"
    path = trajectories.parent / "broken.jsonl"
    path.write_text("\n".join([lines[0], json.dumps(broken), "{cut"]) + "\n")
    dataset = TrajectoryDataset(path)
    assert len(dataset) == 1 and "missing images" in dataset.errors[0]
    with pytest.raises(InputError, match="does not exist"):
        TrajectoryDataset(tmp_path / "none.jsonl")

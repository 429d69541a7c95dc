import pytest
import torch
from transformers import AutoModelForImageTextToText

from awares.errors import ModelLoadError
from awares.models import HFBackend, Sampling, TinyConfig, build_tiny, load_processor
from awares.models.families import FAMILIES
from awares.models.tiny import SPECIAL_TOKENS
from awares.protocol import images_of, turn1_messages, turn2_messages

from .conftest import from_scratch_logits, scene


def test_tiny_model_reloads_with_from_pretrained(tiny_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    processor = load_processor(tiny_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    tok = processor.tokenizer
    for token in SPECIAL_TOKENS:
        assert len(tok.encode(token, add_special_tokens=False)) == 1
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert tok.decode(tok.encode("GET_CROPS: ['0', '5']")) == "GET_CROPS: ['0', '5']"


def test_builder_is_deterministic(tmp_path, tiny_dir):
    other = build_tiny(tmp_path / "again", TinyConfig(max_pixels=400 * 28 * 28))
    a = AutoModelForImageTextToText.from_pretrained(tiny_dir).state_dict()
    b = AutoModelForImageTextToText.from_pretrained(other).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_dir / "tokenizer.json").read_text() == (other / "tokenizer.json").read_text()


def test_chat_template_renders_qwen_turns(backend):
    messages = turn1_messages(scene(), "What colour?")
    text = backend.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("missing", ["config.json", "preprocessor_config.json", "model.safetensors"])
def test_incomplete_model_directory_is_a_clear_error(tmp_path, tiny_dir, missing):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    (copy / missing).unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        HFBackend.load(copy)


def test_missing_and_corrupt_model_directories(tmp_path, tiny_dir):
    with pytest.raises(ModelLoadError, match="does not exist"):
        HFBackend.load(tmp_path / "nowhere")
    import shutil

    copy = tmp_path / "corrupt"
    shutil.copytree(tiny_dir, copy)
    (copy / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load"):
        HFBackend.load(copy)


def test_turn2_with_reused_cache_matches_a_from_scratch_prefill(backend, monkeypatch):
    conversations = [
        turn1_messages(scene(448, 336), "What is written?"),
        turn1_messages(scene(336, 448, 1), "Colour of the box?"),
    ]
    # Sampled, so that the rows of a random-init model differ; the same seed replays the draw.
    sampled = {"max_new_tokens": 4, "sampling": Sampling(temperature=1.0)}
    torch.manual_seed(0)
    probe = backend.generate(conversations, **sampled)
    # Make row 0 stop early so its cache holds masked post-end positions (holes in the attention mask).
    stop = next(t for t in probe.ids[0][:3] if t not in probe.ids[1])
    monkeypatch.setattr(backend.model.generation_config, "eos_token_id", stop)
    monkeypatch.setattr(backend, "eos_ids", {stop})
    torch.manual_seed(0)
    turn1 = backend.generate(conversations, **sampled)
    assert turn1.session.ended[0]
    assert not turn1.session.attention_mask[0, -1]

    crops = [[scene(224, 168, 2), scene(224, 336, 3)], [scene(448, 168, 4)]]
    follow = [turn2_messages(c, t, cr) for c, t, cr in zip(conversations, turn1.texts, crops)]
    cached_prefill = turn1.session.cache.get_seq_length()
    turn2 = backend.extend(turn1.session, [0, 1], follow, max_new_tokens=3, output_logits=True)

    prompt_len = turn2.session.sequences.shape[1] - len(turn2.logits)
    ids = turn2.session.sequences[:, :prompt_len]
    mask = turn2.session.attention_mask[:, :prompt_len]
    assert prompt_len > cached_prefill  # only the tail was new
    reference = from_scratch_logits(backend, ids, mask, follow)
    torch.testing.assert_close(turn2.logits[0], reference, atol=1e-4, rtol=1e-4)

    # the turn-2 ids hold every image's tokens: low-res views and crops
    grid = backend.processor.image_processor([im for c in follow for im in images_of(c)], return_tensors="pt")[
        "image_grid_thw"
    ]
    merge = backend.processor.image_processor.merge_size
    assert int((ids == backend.image_token_id).sum()) == int(grid.prod(dim=1).sum()) // merge**2


def test_extend_on_a_subset_of_rows_matches_single_request(backend):
    conversations = [turn1_messages(scene(448, 336), "What is written?"), turn1_messages(scene(336, 448, 1), "Colour?")]
    crops = [scene(224, 168, 5)]

    batched = backend.generate(conversations, max_new_tokens=3)
    follow = turn2_messages(conversations[1], batched.texts[1], crops)
    batched2 = backend.extend(batched.session, [1], [follow], max_new_tokens=5, output_logits=True)

    single = backend.generate(conversations[1:], max_new_tokens=3)
    assert single.texts == batched.texts[1:]
    single2 = backend.extend(single.session, [0], [follow], max_new_tokens=5, output_logits=True)
    assert batched2.texts == single2.texts
    torch.testing.assert_close(batched2.logits[0], single2.logits[0], atol=1e-4, rtol=1e-4)


def test_batches_pad_on_the_left_whatever_the_processor_config_says(tmp_path, monkeypatch):
    """As a torchvision install loads it (``AutoProcessor``, right padding in the tokenizer config),
    the shipped base still answers a batch as it answers one request at a time."""
    import json
    import shutil

    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    from awares.data import generate
    from awares.models import default_model_dir
    from awares.models import processor as processor_module
    from awares.runtime import Engine, Request, RuntimeConfig

    model = tmp_path / "base"
    shutil.copytree(default_model_dir("full"), model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "right"}))

    def auto_processor(path):  # what AutoProcessor builds where torchvision exists: the config's padding
        tokenizer = AutoTokenizer.from_pretrained(path)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path)
        return processor_module.image_only_processor(FAMILIES["qwen2_5_vl"])(
            image_processor, tokenizer, tokenizer.chat_template
        )

    monkeypatch.setattr(processor_module, "is_torchvision_available", lambda: True)
    monkeypatch.setattr(processor_module.AutoProcessor, "from_pretrained", auto_processor)
    backend = HFBackend.load(model, device="cpu")
    assert auto_processor(model).tokenizer.padding_side == "right" and backend.tokenizer.padding_side == "left"

    requests = [Request(s.image, s.question) for s in generate("test", 6)]
    engine = Engine(backend, RuntimeConfig(max_new_tokens=8, batch_size=6))
    single = [engine.answer_batch([r], "full")[0].answer for r in requests]
    assert [r.answer for r in engine.answer_batch(requests, "full")] == single and all(single)
    backend.tokenizer.padding_side = "right"  # what the batch would have been padded as
    assert [r.answer for r in engine.answer_batch(requests, "full")] != single


@pytest.mark.parametrize(("share", "keep"), [(1.0, 0.0), (1.0, 0.3), (0.5, 0.0)])
def test_patch_filter_init_removes_the_filters_mean_as_configured(share, keep):
    from awares.models.tiny import build_model, build_processor

    config = TinyConfig(vision_layers=1, text_layers=1)
    plain = build_model(config, build_processor(config).tokenizer).model.visual.patch_embed.proj.weight
    config = TinyConfig(vision_layers=1, text_layers=1, center_patch_filters=share, patch_filter_mean=keep)
    shaped = build_model(config, build_processor(config).tokenizer).model.visual.patch_embed.proj.weight
    count = round(plain.shape[0] * share)
    mean = plain.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(shaped[:count].mean(dim=(-2, -1), keepdim=True), keep * mean[:count], atol=1e-6)
    structure = shaped[:count] - shaped[:count].mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(structure, plain[:count] - mean[:count], atol=1e-6)
    assert torch.equal(shaped[count:], plain[count:])  # the other filters keep seeing flat colour

"""The training-free ``attention`` policy: where the model looks, read from one layer's attention;
when to fetch crops, from its confidence and focus."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from awares.cli import main
from awares.crops import Box, boxes_to_crops, covers_evidence, extract_crops
from awares.data import generate
from awares.errors import InputError
from awares.models import HFBackend, default_model_dir
from awares.models.attention import LastTokenAttention
from awares.protocol import turn1_messages
from awares.runtime import Engine, Request, RuntimeConfig

from .conftest import Server, chat, scene


@pytest.fixture(scope="module")
def base():
    return HFBackend.load(default_model_dir("full"), device="cpu")


def test_the_hooked_attention_equals_eager_attentions_own_weights(tiny_dir, backend):
    eager = AutoModelForImageTextToText.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    conversations = [turn1_messages(scene(448, 336), "What is written?"), turn1_messages(scene(224, 168, 1), "Colour?")]
    inputs = backend._encode([backend._prompt(c) for c in conversations], [scene(448, 336), scene(224, 168, 1)])
    for layer in (0, -1):
        with torch.no_grad(), LastTokenAttention(eager, layer, inputs["attention_mask"]) as probe:
            out = eager(**inputs, output_attentions=True, use_cache=True)
        expected = out.attentions[layer][:, :, -1].mean(dim=1)
        torch.testing.assert_close(probe.weights, expected, atol=1e-5, rtol=1e-4)


def test_a_detail_question_fetches_the_crop_it_looks_at_and_a_global_one_does_not(base):
    samples = list(generate("test", 30))
    detail = [s for s in samples if s.kind == "detail"][:4]
    background = [s for s in samples if s.meta.get("type") == "background"][:4]
    engine = Engine(base, RuntimeConfig(max_new_tokens=16))
    results = engine.answer_batch([Request(s.image, s.question) for s in detail + background], "attention")
    for sample, result in zip(detail, results):
        assert result.crops and result.parse_status == "call" and len(result.turns) == 2
        assert result.answer == sample.answers[0] and result.rtr <= 1.0
        assert result.attention["focus"] >= engine.config.attention.focus
    # one plate of these straddles every quadrant of a 224-px image: its cover would cost more than
    # the full image, and the crops within that cost hold most, not all, of it
    assert sum(covers_evidence(s.evidence, r.crops, *s.image.size) for s, r in zip(detail, results)) >= 3
    for sample, result in zip(background, results[len(detail) :]):
        assert not result.crops and result.rtr == pytest.approx(0.25, abs=0.02)
        assert result.answer == sample.answers[0]
    grid = results[0].attention["grid"]
    assert abs(sum(map(sum, grid)) - 1) < 1 and len(results[0].attention["box"]) == 4


def test_the_attention_policy_needs_a_backend_that_reads_attention(base):
    class Remote:  # what OpenAIBackend offers: generate and extend, no attention
        processor = base.processor

    with pytest.raises(InputError, match="in-process HF backend"):
        Engine(Remote()).answer(scene(), "What is written?", "attention")


def test_ask_eval_and_serve_run_the_attention_policy(tmp_path, capsys):
    from awares.models.endpoint import data_url
    from awares.serve import ServeConfig

    sample = next(s for s in generate("test", 30) if s.kind == "detail")
    sample.image.save(tmp_path / "page.png")
    assert main(["ask", str(tmp_path / "page.png"), sample.question, "--policy", "attention", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["policy"] == "attention" and result["crops"] and result["attention"]["box"]

    args = ["eval", "--data", "synthetic:test:6", "--policy", "attention", "--out", str(tmp_path / "eval")]
    assert main(args) == 0
    assert "attention" in capsys.readouterr().out

    server = Server(Engine(HFBackend.load(default_model_dir("full"), device="cpu")), ServeConfig())
    try:
        status, body, _ = server.post(chat(data_url(sample.image), sample.question, max_tokens=16, policy="attention"))
    finally:
        server.stop()
    assert status == 200 and body["awares"]["policy"] == "attention" and body["awares"]["crops"]


def test_the_attention_oracle_boxes_the_evidence_the_base_reads_at_full_resolution(base):
    from awares.crops import boxes_to_crops
    from awares.curate import make_oracle
    from awares.data.records import Record

    oracle = make_oracle("attention", engine=Engine(base))
    for sample in [s for s in generate("test", 30) if s.kind == "detail"][:4]:
        record = Record(sample.id, "x.png", sample.question, sample.answers)  # no evidence boxes given
        boxes = oracle(record, sample.image, sample.answers[0])
        crops = boxes_to_crops(boxes, *sample.image.size).crop_ids
        assert covers_evidence(sample.evidence, crops, *sample.image.size)


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_the_attention_policy_never_costs_more_than_full_resolution(base, mode):
    """A uniform image spreads the attention everywhere: the rule's box is the whole image."""
    from PIL import Image

    image = Image.new(mode, (448, 336), "black" if mode == "RGB" else (10, 20, 30, 40))
    engine = Engine(base, RuntimeConfig(max_new_tokens=8))
    engine.config.attention.confidence_threshold = 1.01  # always look closer
    (result,) = engine.answer_batch([Request(image, "What color is the background?")], "attention")
    cover = boxes_to_crops([Box(*result.attention["box"])], 448, 336).crop_ids
    grid = engine.grid
    assert grid.tokens(224, 168) + sum(grid.tokens(*c.size) for c in extract_crops(image, cover)) > grid.tokens(
        448, 336
    )
    assert result.crops and len(result.turns) == 2 and result.rtr <= 1.0

"""The engine's behaviour, on each backend: in process (HF) and on a VLM server (OpenAIBackend
against ``awares serve --raw``)."""

import os

import pytest

from awares.crops import VisionGrid, extract_crops, low_res_view
from awares.errors import InputError
from awares.models import HFBackend, OpenAIBackend
from awares.runtime import Engine, Request, RuntimeConfig
from awares.serve import ServeConfig

from .conftest import Scripted, Server, scene

IMAGE = scene(448, 336)


@pytest.fixture(scope="module", params=["hf", "openai"])
def either(request, tiny_dir):
    """The tiny model in process, or served raw on loopback and reached through OpenAIBackend."""
    hf = HFBackend.load(tiny_dir, device=os.environ.get("AWARES_TEST_DEVICE", "cpu"), dtype="float32")
    if request.param == "hf":
        yield hf
        return
    server = Server(Engine(hf, RuntimeConfig()), ServeConfig(max_batch=8, max_wait_ms=5), raw=True)
    yield OpenAIBackend(f"{server.url}/v1", "awares", hf.processor)
    server.stop()


def test_full_and_low_baselines_count_tokens_exactly(either):
    engine = Engine(either, RuntimeConfig(max_new_tokens=4))
    grid = VisionGrid.from_processor(either.processor)
    full = engine.answer(IMAGE, "What is written?", "full")
    low = engine.answer(IMAGE, "What is written?", "low")
    assert full.tokens.view == full.tokens.full == grid.tokens(448, 336) and full.rtr == 1.0
    assert low.tokens.view == grid.tokens(224, 168)
    assert low.rtr == pytest.approx(grid.tokens(224, 168) / grid.tokens(448, 336))
    assert len(full.turns) == len(low.turns) == 1 and len(full.seconds) == 1


def test_a_tool_call_fetches_the_crops_and_runs_turn_two(either):
    engine = Engine(Scripted(either, ["GET_CROPS: ['0', '5']"]), RuntimeConfig(max_new_tokens=4, min_crop_side=28))
    result = engine.answer(IMAGE, "What is written?")
    grid = engine.grid
    assert result.parse_status == "call" and result.crops == ("0", "5")
    assert result.tokens.crops == grid.tokens(224, 168) + grid.tokens(448, 168)
    assert result.rtr == pytest.approx((grid.tokens(224, 168) + result.tokens.crops) / grid.tokens(448, 336))
    assert len(result.turns) == 2 and len(result.seconds) == 2
    assert result.answer == result.turns[1].strip()


def test_the_result_carries_the_conversation_the_model_saw_and_its_generated_ids(either):
    engine = Engine(Scripted(either, ["GET_CROPS: ['0', '5']"]), RuntimeConfig(max_new_tokens=4))
    result = engine.answer(IMAGE, "What is written?")
    roles = [m["role"] for m in result.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    images = [p["image"] for m in result.messages for p in m["content"] if p["type"] == "image"]
    expected = [low_res_view(IMAGE), *extract_crops(IMAGE, ["0", "5"])]
    assert [im.tobytes() for im in images] == [im.tobytes() for im in expected]
    assert result.messages[2]["content"][0]["text"] == "GET_CROPS: ['0', '5']"
    assert result.messages[-1]["content"][0]["text"] == result.turns[1]
    assert result.crop_pixels == 224 * 168 + 448 * 168 and result.image_size == (448, 336)
    assert len(result.token_ids) == 2 and all(isinstance(i, int) for i in result.token_ids[1])
    assert "messages" not in result.to_dict() and result.to_dict()["image_size"] == [448, 336]
    direct = Engine(either, RuntimeConfig(max_new_tokens=4)).answer(IMAGE, "What?", "low")
    assert [m["role"] for m in direct.messages] == ["user", "assistant"] and len(direct.token_ids) == 1
    assert either.tokenizer.decode(direct.token_ids[0], skip_special_tokens=True) == direct.turns[0]


def test_a_second_call_in_turn_two_is_no_answer(either):
    engine = Engine(Scripted(either, ["GET_CROPS: ['0']"], turn2=["GET_CROPS: ['1']"]), RuntimeConfig(max_new_tokens=4))
    result = engine.answer(IMAGE, "What is written?")
    assert result.answer == "" and "only one tool round" in result.parse_error
    assert result.turns[1] == "GET_CROPS: ['1']" and result.crops == ("0",) and result.parse_status == "call"


def test_a_request_gets_the_same_answers_alone_and_in_a_batch(either):
    texts = ["GET_CROPS: ['3']", "red", "GET_CROPS: ['0', '6']"]
    requests = [Request(scene(448, 336, i), f"question {i}") for i in range(3)]
    config = RuntimeConfig(max_new_tokens=5, batch_size=3)
    batched = Engine(Scripted(either, texts), config).answer_batch(requests)
    for i in (0, 2):
        alone = Engine(Scripted(either, texts[i : i + 1]), config).answer_batch(requests[i : i + 1])[0]
        assert alone.turns == batched[i].turns and alone.crops == batched[i].crops


def test_malformed_call_falls_back_to_the_whole_image_and_is_counted(either):
    engine = Engine(Scripted(either, ["GET_CROPS: ['nine']"]), RuntimeConfig(max_new_tokens=3))
    result = engine.answer(IMAGE, "Read it")
    assert result.parse_status == "malformed" and result.parse_error
    assert result.crops == ("all",) and len(result.turns) == 2
    assert result.tokens.crops == result.tokens.full


def test_malformed_call_can_be_taken_as_the_answer(either):
    engine = Engine(Scripted(either, ["GET_CROPS: ['nine']"]), RuntimeConfig(max_new_tokens=3, on_malformed="answer"))
    result = engine.answer(IMAGE, "Read it")
    assert result.parse_status == "malformed" and result.crops == () and len(result.turns) == 1
    assert result.answer == "GET_CROPS: ['nine']"


def test_strict_mode_rejects_undocumented_calls(either):
    engine = Engine(
        Scripted(either, ["GET_CROPS: [0]"]), RuntimeConfig(max_new_tokens=3, strict_parse=True, on_malformed="answer")
    )
    assert engine.answer(IMAGE, "Read it").parse_status == "malformed"


def test_batch_mixes_answers_calls_and_errors_in_request_order(either):
    texts = ["blue", "GET_CROPS: ['4']", "GET_CROPS: []", "GET_CROPS: ['7', '8']"]
    engine = Engine(Scripted(either, texts), RuntimeConfig(max_new_tokens=3, batch_size=4))
    requests = [Request(scene(448, 336, i), f"question {i}") for i in range(4)]
    results = engine.answer_batch(requests)
    assert [r.parse_status for r in results] == ["answer", "call", "malformed", "call"]
    assert [r.crops for r in results] == [(), ("4",), ("all",), ("7", "8")]
    assert results[0].answer == "blue" and len(results[0].turns) == 1
    assert all(len(r.turns) == 2 for r in results[1:])


def test_oracle_shows_the_given_crops(either):
    engine = Engine(either, RuntimeConfig(max_new_tokens=3))
    with_crops = engine.answer(IMAGE, "What is written?", "oracle", oracle_crops=["3"])
    assert with_crops.crops == ("3",) and with_crops.turns[0] == "GET_CROPS: ['3']"
    assert with_crops.tokens.crops == engine.grid.tokens(224, 168)
    without = engine.answer(IMAGE, "Colour?", "oracle")
    assert without.crops == () and without.tokens.crops == 0


def test_bad_requests_are_refused(either):
    engine = Engine(either)
    with pytest.raises(InputError, match="empty"):
        engine.answer(IMAGE, "   ")
    with pytest.raises(InputError, match="unknown policy"):
        engine.answer(IMAGE, "q", "sometimes")

"""The shipped policy, and a tiny checkpoint of each family, on a real llama.cpp ``llama-server``,
exported with ``awares export gguf``.

``scripts/llama_server.sh`` builds the server (``.ci/run`` does, once per machine); without it these
tests are skipped on a developer's machine and fail under CI.
"""

import json
import re
import urllib.request

import pytest

from awares.crops import extract_crops, low_res_view
from awares.data import generate
from awares.export import export_gguf, llama_server
from awares.models import HFBackend, OpenAIBackend, default_model_dir
from awares.models.openai_backend import to_openai
from awares.protocol import CALL_OR_ANSWER_REGEX, SYSTEM_PROMPT, parse_response, turn1_messages, turn2_messages
from awares.runtime import Engine, RuntimeConfig

from .conftest import need_llama_server


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


@pytest.fixture(scope="module")
def llama(tmp_path_factory, free_tcp_port_factory):
    """The shipped policy exported to f16 GGUF and served by llama-server: its ``/v1`` URL."""
    need_llama_server()
    out = tmp_path_factory.mktemp("gguf")
    exported = export_gguf(default_model_dir("crops"), out)
    with llama_server(exported, free_tcp_port_factory(), "-t", "2", "-np", "1", log=out / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def hf():
    return Engine(HFBackend.load(), RuntimeConfig(max_new_tokens=16))


def remote(url: str, hf: Engine, **options) -> Engine:
    processor = hf.backend.processor
    backend = OpenAIBackend(url, "awares", processor, family=hf.backend.family, **options)
    return Engine(backend, RuntimeConfig(max_new_tokens=16))


def test_llama_server_answers_as_the_in_process_backend(llama, hf):
    engine = remote(llama, hf)
    samples = list(generate("test", 8))
    there = [engine.answer(s.image, s.question) for s in samples]
    here = [hf.answer(s.image, s.question) for s in samples]
    assert [(r.answer, r.crops, r.rtr) for r in there] == [(r.answer, r.crops, r.rtr) for r in here]
    assert engine.backend.usage_checked  # and the server's prompt tokens were the processor's
    assert any(r.crops for r in there) and any(not r.crops for r in there)  # both kinds of turn


def test_turn_one_is_reused_from_llama_cpps_prompt_cache(llama, hf):
    sample = next(s for s in generate("test", 20) if s.kind == "detail")
    turn1 = turn1_messages(low_res_view(sample.image), sample.question, SYSTEM_PROMPT)
    first = post(llama + "/chat/completions", {"messages": to_openai(turn1), "max_tokens": 16, "temperature": 0})
    call = parse_response(first["choices"][0]["message"]["content"])
    conversation = turn2_messages(
        turn1, first["choices"][0]["message"]["content"], extract_crops(sample.image, call.crop_ids)
    )
    second = post(
        llama + "/chat/completions", {"messages": to_openai(conversation), "max_tokens": 16, "temperature": 0}
    )
    timings = second["timings"]
    assert timings["cache_n"] >= first["usage"]["prompt_tokens"]  # all of turn 1's prompt came from the cache
    assert timings["prompt_n"] < second["usage"]["prompt_tokens"] - timings["cache_n"] + 1  # only the rest evaluated


def test_grammar_guided_calls_always_parse_on_llama_cpp(llama, hf):
    engine = remote(llama, hf, guided_calls=True)  # the engine is asked: llama.cpp, so its GBNF grammar is sent
    assert engine.backend.describe()["engine"] == "llama.cpp"
    # Sampled wide (llama.cpp's top_p, top_k and min_p off) on questions the policy calls on, the model's
    # calls break without the grammar and always parse with the one the backend sends.
    samples = [s for s in generate("test", 100) if s.kind == "detail"][:24]
    parsed = {}
    for guided in (None, engine.backend.extra_body):
        texts = []
        for seed, s in enumerate(samples):
            messages = to_openai(turn1_messages(low_res_view(s.image), s.question, SYSTEM_PROMPT))
            body = {
                "messages": messages,
                "max_tokens": 24,
                "temperature": 3.0,
                "top_p": 1.0,
                "top_k": 0,
                "min_p": 0,
                "seed": seed,
            }
            texts.append(
                post(llama + "/chat/completions", {**body, **(guided or {})})["choices"][0]["message"]["content"]
            )
        parsed[guided is not None] = [bool(re.fullmatch(CALL_OR_ANSWER_REGEX, t)) for t in texts]
    assert not all(parsed[False]) and all(parsed[True])


def test_every_family_exports_and_llama_server_sizes_its_images_as_the_processor(family_dir, tmp_path, free_tcp_port):
    # A random tiny model's answers hang on near-ties that f32 and torch break differently; what must
    # hold is the image's token count on the full and the low view, and a second turn with two crops.
    need_llama_server()
    exported = export_gguf(family_dir, tmp_path, "f32")
    local = HFBackend.load(family_dir, dtype="float32")
    sample = next(generate("test", 1))
    with llama_server(exported, free_tcp_port, "-t", "1", "-np", "1") as url:
        for policy in ("full", "low", "oracle"):
            backend = OpenAIBackend(url, "awares", local.processor, family=local.family)
            engine = Engine(backend, RuntimeConfig(max_new_tokens=4))
            result = engine.answer(sample.image, sample.question, policy, oracle_crops=["1", "6"])
            assert backend.usage_checked  # else _check_usage raised: the server counted other tokens
            assert result.crops == (("1", "6") if policy == "oracle" else ())

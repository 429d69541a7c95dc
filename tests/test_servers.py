"""Which engine an OpenAI-compatible server is, and the call constraint each one is sent."""

import re

import pytest

from awares.crops import low_res_view
from awares.data import generate
from awares.errors import InputError
from awares.models import OpenAIBackend
from awares.models.endpoint import EndpointError
from awares.models.servers import CALL_OR_ANSWER_GBNF, ENGINES, detect_engine, engine_named
from awares.protocol import CALL_OR_ANSWER_REGEX, SYSTEM_PROMPT, turn1_messages

from .fake_openai import FakeChatServer

# What each engine answers to the probes (trimmed to the keys they read; the real replies hold more).
PROBES = {
    "awares": {"/v1/models": {"object": "list", "data": [{"id": "awares", "owned_by": "awares"}]}},
    "llama.cpp": {"/props": {"default_generation_settings": {}, "build_info": "b1"}, "/version": {"version": "x"}},
    "sglang": {"/get_server_info": {"model_path": "m"}, "/version": {"version": "0.5"}},
    "vllm": {"/version": {"version": "0.11.0"}, "/v1/models": {"data": [{"id": "m", "owned_by": "vllm"}]}},
}


@pytest.mark.parametrize("name", list(PROBES))
def test_each_engine_is_recognised_by_its_own_routes(name):
    with FakeChatServer([(200, "x")], routes=PROBES[name]) as server:
        assert detect_engine(server.url).name == name
    with FakeChatServer([(200, "x")]) as server:  # a server that answers no probe
        assert detect_engine(server.url) is None


@pytest.mark.parametrize("name", ["llama.cpp", "sglang", "vllm"])
def test_guided_calls_send_the_constraint_the_detected_engine_enforces(name, backend):
    with FakeChatServer([(200, "GET_CROPS: ['0']")], routes=PROBES[name]) as server:
        backend = OpenAIBackend(server.url, "m", backend.processor, guided_calls=True)
        backend.generate([[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]])
    sent = {k: v for k, v in server.requests[0].items() if k in ("grammar", "regex", "structured_outputs")}
    assert sent == engine_named(name).guided
    assert backend.describe()["engine"] == name


def test_guided_calls_are_refused_where_the_engine_would_ignore_them(backend):
    processor = backend.processor
    with FakeChatServer([(200, "x")], routes=PROBES["awares"]) as server:
        with pytest.raises(InputError, match="awares at .* cannot constrain decoding"):
            OpenAIBackend(server.url, "m", processor, guided_calls=True)
    with FakeChatServer([(200, "x")]) as server:
        with pytest.raises(InputError, match="name it with --engine"):
            OpenAIBackend(server.url, "m", processor, guided_calls=True)
        backend = OpenAIBackend(server.url, "m", processor, guided_calls=True, engine="llama.cpp")
        assert backend.extra_body == {"grammar": CALL_OR_ANSWER_GBNF}
        assert OpenAIBackend(server.url, "m", processor).extra_body is None  # unguided: nothing asked, nothing sent
    assert not server.requests
    with pytest.raises(InputError, match="unknown server engine 'tgi'"):
        engine_named("tgi")


def test_every_engine_that_guides_gets_the_same_language():
    """SGLang and vLLM take the regex itself; llama.cpp's grammar spells out its alternatives."""
    assert [e.name for e in ENGINES if e.guided] == ["llama.cpp", "sglang", "vllm"]
    assert re.search(r"""call ::= "GET_CROPS: \[" \("'all'" \| crop \(", " crop\)\*\) "\]\"""", CALL_OR_ANSWER_GBNF)
    assert "[0-8]" in CALL_OR_ANSWER_GBNF and "[0-8]" in CALL_OR_ANSWER_REGEX


def test_a_server_that_counts_other_prompt_tokens_than_the_processor_is_an_error(backend):
    sample = next(generate("test", 1))
    conversation = turn1_messages(low_res_view(sample.image), sample.question, SYSTEM_PROMPT)
    text = backend.template.prompt(conversation)
    expected = len(backend.processor(text=[text], images=[low_res_view(sample.image)])["input_ids"][0])
    for counted, fails in ((expected, False), (expected + 40, True)):
        with FakeChatServer([(200, "pink")], prompt_tokens=counted) as server:
            api = OpenAIBackend(server.url, "m", backend.processor, family=backend.family)
            if fails:
                with pytest.raises(EndpointError, match=f"counts {expected + 40} prompt tokens where the processor"):
                    api.generate([conversation])
            else:
                assert api.generate([conversation]).texts == ["pink"]
                assert api.generate([conversation]).texts == ["pink"]  # checked once, then trusted


def test_the_backend_retries_a_busy_server_and_reports_a_failing_one_in_one_line(backend):
    question = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    with FakeChatServer([(503, "busy"), (200, "red")]) as server:  # one 503, then answers
        assert OpenAIBackend(server.url, "m", backend.processor).generate([question]).texts == ["red"]
    assert len(server.requests) == 2
    with FakeChatServer([(400, "no such model")]) as server:  # a client error: not retried
        with pytest.raises(EndpointError, match="HTTP 400: no such model"):
            OpenAIBackend(server.url, "m", backend.processor).generate([question])
    assert len(server.requests) == 1
    with FakeChatServer([(200, "x")]) as server:
        closed = server.url
    with pytest.raises(EndpointError, match="MaxRetryError"):  # nothing listens there any more
        OpenAIBackend(closed, "m", backend.processor, max_retries=0, timeout=2).generate([question])

"""A server that one bad request cannot hurt: isolation in batches, OpenAI's error JSON for every
failure, metrics of every status, policies that keep their promise, and a visual-token budget."""

import base64
import http.client
import json
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import PngImagePlugin

from awares.cli import main
from awares.data import generate, write_dataset
from awares.models import Sampling
from awares.models.endpoint import data_url
from awares.runtime import Engine, RuntimeConfig
from awares.serve import ServeConfig

from .conftest import ForcedCalls, Server, chat, scene
from .fake_openai import FakeChatServer

IMAGES = [scene(448, 336, i) for i in range(8)]


@pytest.fixture(scope="module")
def server(backend):
    server = Server(Engine(backend, RuntimeConfig(max_new_tokens=4)), ServeConfig(max_batch=8, max_wait_ms=50))
    yield server
    server.stop()


def raw_post(server, body: bytes, headers=None, chunked=False):
    """``(status, json)`` of a POST with a raw body (optionally sent chunked, without a length)."""
    url = urllib.parse.urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request(
        "POST", "/v1/chat/completions", body=iter([body]) if chunked else body,
        headers={"Content-Type": "application/json", **(headers or {})}, encode_chunked=chunked,
    )  # fmt: skip
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def is_openai_error(body, status):
    error = body["error"]
    return set(error) == {"message", "type", "param", "code"} and error["code"] == status and error["message"]


def test_a_bad_request_among_good_ones_never_changes_their_answers(server, backend):
    questions = [f"What is written? {i}" for i in range(7)]
    engine = Engine(backend, RuntimeConfig(max_new_tokens=4))
    alone = [engine.answer(im, q).answer for im, q in zip(IMAGES, questions)]
    bad = chat(data_url(IMAGES[7]), "a \ud800 b")  # a lone surrogate: no tokenizer encodes it
    for _ in range(20):
        bodies = [chat(data_url(im), q) for im, q in zip(IMAGES, questions)]
        bodies.insert(3, bad)
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(server.post, bodies))
        assert replies[3][0] == 400 and is_openai_error(replies[3][1], 400)
        good = replies[:3] + replies[4:]
        assert [status for status, _, _ in good] == [200] * 7
        assert [body["choices"][0]["message"]["content"] for _, body, _ in good] == alone


def test_a_bug_fails_only_the_request_that_meets_it_with_a_500_in_openais_json(server, monkeypatch):
    real = Engine.answer_batch

    def answer_batch(self, requests, *args, on_text=None, **kwargs):
        if any("boom" in r.question for r in requests):
            if on_text:  # a stream has started
                on_text(0, "partial")
            raise RuntimeError("boom")
        return real(self, requests, *args, on_text=on_text, **kwargs)

    monkeypatch.setattr(Engine, "answer_batch", answer_batch)
    bodies = [chat(data_url(IMAGES[0]), "boom"), chat(data_url(IMAGES[1]), "What is written?")]
    with ThreadPoolExecutor(2) as pool:
        (bad, body, _), (good, _, _) = pool.map(server.post, bodies)
    assert bad == 500 and is_openai_error(body, 500) and "boom" in body["error"]["message"] and good == 200
    events = server.stream(chat(data_url(IMAGES[0]), "boom", stream=True))
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "partial"
    assert events[-1] == "[DONE]" and is_openai_error(json.loads(events[-2]), 500)  # never a cut connection
    metrics = server.get("/metrics")
    assert 'awares_requests_total{status="500"}' in metrics


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"messages": "\xff\xfe"}', "not valid UTF-8"),
        (b"{not json", "not JSON"),
    ],
)
def test_malformed_bodies_are_400_in_openais_json(server, body, message):
    status, reply = raw_post(server, body)
    assert status == 400 and is_openai_error(reply, 400) and message in reply["error"]["message"]


def test_a_chunked_upload_over_the_limit_is_refused_while_it_is_read(backend):
    small = Server(Engine(backend, RuntimeConfig(max_new_tokens=4)), ServeConfig(max_request_bytes=1 << 20))
    try:
        status, reply = raw_post(small, b" " * (4 << 20), chunked=True)
        assert status == 413 and is_openai_error(reply, 413)
        assert 'awares_requests_total{status="413"}' in small.get("/metrics")
    finally:
        small.stop()


def test_unknown_routes_and_methods_answer_in_openais_json(server):
    url = urllib.parse.urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    connection.request("GET", "/v1/chat/completions")
    response = connection.getresponse()
    assert response.status == 405 and is_openai_error(json.loads(response.read()), 405)


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_an_underflowing_temperature_is_greedy_in_both_modes(server, temperature):
    greedy = server.post(chat(data_url(IMAGES[0])))[1]["choices"][0]["message"]["content"]
    status, reply, _ = server.post(chat(data_url(IMAGES[0]), temperature=temperature))
    assert status == 200 and reply["choices"][0]["message"]["content"] == greedy
    events = server.stream(chat(data_url(IMAGES[0]), temperature=temperature, stream=True))
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("field", ["logprobs", "tools", "response_format", "tool_choice", "stop"])
def test_unsupported_openai_fields_are_refused_by_name(server, field):
    value = True if field == "logprobs" else ({"type": "json_object"} if field == "response_format" else ["x"])
    status, reply, _ = server.post(chat(data_url(IMAGES[0]), **{field: value}))
    assert status == 400 and field in reply["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": True}, "max_tokens"),  # a bool is not a count
        ({"temperature": "1"}, "temperature"),  # nor a string a number
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 2}, "n"),
        ({"seed": -1}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"awares": {"max_rtr": 0}}, "awares.max_rtr"),
        ({"awares": {"max_tokens": 3}}, "awares.max_tokens"),
        ({"max_tokens": 10_000}, "max_tokens"),  # over the server's limit
        ({"policy": "zoom"}, "policy"),
    ],
)
def test_a_field_the_server_cannot_take_is_named_in_the_errors_param(server, extra, param):
    status, reply, _ = server.post(chat(data_url(IMAGES[0]), **extra))
    assert status == 400 and is_openai_error(reply, 400) and reply["error"]["param"] == param, reply
    assert reply["error"]["message"].startswith(param) or param in reply["error"]["message"]


@pytest.mark.parametrize(
    ("part", "param", "message"),
    [
        ({"type": "input_audio", "input_audio": {}}, "messages.0.content.0", "does not match any of the expected"),
        ({"type": "image_url"}, "messages.0.content.0.image_url", "Field required"),
        ({"type": "text", "text": "a \ud800 b"}, "messages.0.content.0.text", "not valid Unicode"),
    ],
)
def test_a_bad_content_part_is_named_by_its_place(server, part, param, message):
    status, reply, _ = server.post({"messages": [{"role": "user", "content": [part]}]})
    assert status == 400 and reply["error"]["param"] == param and message in reply["error"]["message"], reply


def test_fields_openai_clients_add_are_ignored_as_openai_ignores_them(server):
    status, reply, _ = server.post(chat(data_url(IMAGES[0]), user="someone", metadata={"run": "1"}))
    assert status == 200 and reply["choices"][0]["message"]["content"]


def test_the_same_seed_samples_the_same_answer(backend):
    sampled = Server(Engine(backend, RuntimeConfig(max_new_tokens=12)), ServeConfig())
    try:
        ask = lambda seed: sampled.post(chat(data_url(IMAGES[0]), temperature=1.0, max_tokens=12, seed=seed))  # noqa: E731
        answers = [ask(seed)[1]["choices"][0]["message"]["content"] for seed in (7, 7, 8, 9, 10)]
        assert answers[0] == answers[1] and len(set(answers)) > 1
    finally:
        sampled.stop()


def test_an_image_in_an_assistant_message_is_named_as_the_cause(server):
    body = chat(data_url(IMAGES[0]))
    body["messages"].insert(0, {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]})
    status, reply, _ = server.post(body)
    assert status == 400 and "images belong in user messages" in reply["error"]["message"]


def _inflating_png(path):
    """A PNG whose compressed text chunk inflates past Pillow's limit (MAX_TEXT_CHUNK, 1 MB)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 10), zip=True)
    scene(224, 224).save(path, pnginfo=info)
    assert len(path.read_bytes()) < 64_000  # small on disk
    return path


def test_an_image_past_the_decompression_limit_is_a_clear_error_everywhere(tmp_path, server, tiny_dir, capsys):
    png = _inflating_png(tmp_path / "bomb.png")
    status, reply, _ = server.post(chat("data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()))
    assert status == 400 and "decompression" in reply["error"]["message"]
    assert main(["ask", str(png), "q", "--model", str(tiny_dir)]) == 2
    assert "decompression" in capsys.readouterr().err
    data = write_dataset(generate("test", 3), tmp_path / "ds")
    rows = (data / "data.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    (data / first["image"]).write_bytes(png.read_bytes())
    out = tmp_path / "eval"
    assert main(["eval", "--data", str(data), "--model", str(tiny_dir), "--out", str(out), "--policy", "low"]) == 0
    errors = (out / "low.errors.jsonl").read_text()
    assert first["id"] in errors and "decompression" in errors


def test_policies_that_make_no_call_never_return_call_text(server, backend):
    with ForcedCalls(backend, ["3"], ["What is written?"]):  # the model wants to call
        calls = server.post(chat(data_url(IMAGES[0]), max_tokens=16))[1]
        assert calls["awares"]["crops"] == ["3"]
        for policy in ("full", "low", "attention"):
            reply = server.post(chat(data_url(IMAGES[0]), max_tokens=16, policy=policy))[1]
            assert not reply["choices"][0]["message"]["content"].startswith("GET"), policy
            assert reply["awares"]["crops"] == [] or policy == "attention"


def test_a_budget_masks_the_crops_it_cannot_afford_and_is_reported(server, backend):
    full = Engine(backend).grid.tokens(448, 336)
    with ForcedCalls(backend, ["5"], ["What is written?"]):  # the model wants the top half (half the tokens)
        free = server.post(chat(data_url(IMAGES[0]), max_tokens=16))[1]["awares"]
        tight = server.post(chat(data_url(IMAGES[0]), max_tokens=16, awares={"max_rtr": 0.5}))[1]["awares"]
        none = server.post(chat(data_url(IMAGES[0]), max_tokens=16, awares={"max_crops": 0}))[1]["awares"]
    assert free["crops"] == ["5"] and free["rtr"] > 0.5
    assert tight["rtr"] <= 0.5 and tight["crops"] and tight["budget"] == {"max_rtr": 0.5, "max_crops": None}
    assert none["crops"] == [] and none["rtr"] == pytest.approx(free["tokens"]["view"] / full)
    status, reply, _ = server.post(chat(data_url(IMAGES[0]), awares={"max_rtr": 0.1}))
    assert status == 400 and "below the low-res view's own share" in reply["error"]["message"]


def test_max_rtr_holds_on_every_request_of_an_eval(tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        main(["eval", "--data", "synthetic:test:40", "--policy", "crops", "--max-rtr", "0.5", "--out", str(out)]) == 0
    )
    rows = [json.loads(line) for line in (out / "crops.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and max(r["rtr"] for r in rows) <= 0.5 and any(r["crops"] for r in rows)


def test_a_client_that_leaves_mid_stream_is_counted_as_a_disconnect(server, monkeypatch):
    real = Engine.answer_batch

    def slow(self, requests, *args, on_text=None, **kwargs):  # a first delta, then a long decode
        if on_text:
            on_text(0, "partial")
            threading.Event().wait(1.0)
        return real(self, requests, *args, on_text=on_text, **kwargs)

    monkeypatch.setattr(Engine, "answer_batch", slow)
    url = urllib.parse.urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    body = json.dumps(chat(data_url(IMAGES[0]), stream=True, max_tokens=64)).encode()
    connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.fp.readline()  # the first event, then gone
    response.close()
    connection.close()
    seen = threading.Event()
    for _ in range(100):
        if 'awares_requests_total{status="disconnect"}' in server.get("/metrics"):
            seen.set()
            break
        threading.Event().wait(0.05)
    assert seen.is_set()


def test_without_a_model_the_server_runs_each_policy_on_the_checkpoint_ask_runs_it_with(capsys, tmp_path):
    from awares.cli import build_parser
    from awares.cli.options import engines
    from awares.models import default_model_dir
    from awares.runtime import SERVED_POLICIES

    served = engines(build_parser().parse_args(["serve", "--max-new-tokens", "8"]), SERVED_POLICIES)
    assert {p: e.backend.source for p, e in served.items()} == {p: default_model_dir(p) for p in SERVED_POLICIES}
    server = Server(served, ServeConfig())
    try:
        sample = next(s for s in generate("test", 10) if s.kind == "detail")
        path = tmp_path / "page.png"
        sample.image.save(path)
        for policy in ("low", "full", "crops"):
            assert main(["ask", str(path), sample.question, "--policy", policy, "--max-new-tokens", "8", "--json"]) == 0
            asked = json.loads(capsys.readouterr().out)
            body = chat(data_url(sample.image), sample.question, policy=policy, max_tokens=8)
            reply = server.post(body)[1]
            assert reply["choices"][0]["message"]["content"] == asked["answer"], policy
            assert reply["awares"]["crops"] == asked["crops"]
    finally:
        server.stop()


def test_the_openai_backend_passes_temperature_and_top_p_on(backend):
    from awares.models import OpenAIBackend

    question = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
    with FakeChatServer([(200, "red")]) as server:
        remote = OpenAIBackend(server.url, "m", backend.processor)
        remote.generate([question], sampling=Sampling(temperature=0.7, top_p=0.3, top_k=5, seed=3))
        remote.generate([question])  # greedy: temperature 0, vLLM's default top_k, no seed
    sampled, greedy = server.requests
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"], sampled["top_k"]) == (0.7, 0.3, 3, 5)
    assert greedy["temperature"] == 0.0 and "seed" not in greedy and "top_k" not in greedy
    assert sampled["messages"] == [{"role": "user", "content": "q"}] and sampled["model"] == "m"

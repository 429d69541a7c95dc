"""`awares serve`: the OpenAI client against a real server on loopback, bad input, batching, 503s."""

import base64
import io
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from awares.models.endpoint import data_url
from awares.runtime import Engine, Request, RuntimeConfig
from awares.serve import Limits, ServeConfig

from .conftest import Server, chat, scene


@pytest.fixture()
def serve(backend):
    servers = []

    def start(**config):
        limits = config.pop("limits", Limits())
        engine = Engine(backend, RuntimeConfig(max_new_tokens=4))
        servers.append(Server(engine, ServeConfig(limits=limits, **config)))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_the_openai_client_gets_answers_with_crops_and_rtr(serve, backend):
    import openai

    server = serve()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none")
    assert [m.id for m in client.models.list().data] == ["awares"]
    image = scene(448, 336)
    for policy in ("crops", "full", "low"):
        reply = client.chat.completions.create(**chat(data_url(image)), extra_body={"policy": policy})
        awares = reply.model_extra["awares"]
        expected = Engine(backend, RuntimeConfig(max_new_tokens=4)).answer(image, "What is written?", policy)
        assert reply.choices[0].message.content == expected.answer and awares["policy"] == policy
        assert awares["rtr"] == pytest.approx(expected.rtr) and awares["tokens"]["full"] == expected.tokens.full
        assert (
            reply.usage.prompt_tokens_details.model_extra["visual_tokens"]
            == expected.tokens.view + expected.tokens.crops
        )
    assert json.loads(server.get("/health"))["status"] == "ok"
    metrics = server.get("/metrics")
    assert 'awares_requests_total{status="200"} 3.0' in metrics and 'awares_visual_tokens_total{kind="full"}' in metrics


def png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_bad_request_gets_a_clear_4xx_and_the_server_keeps_serving(serve, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    scene().save(media / "ok.png")
    scene().save(tmp_path / "outside.png")
    server = serve(
        limits=Limits(max_image_bytes=200_000, max_image_pixels=2_000_000, allowed_local_media_path=str(media))
    )
    good = data_url(scene())
    two = chat(good)
    two["messages"][0]["content"].append({"type": "image_url", "image_url": {"url": good}})
    big = "data:image/png;base64," + base64.b64encode(png(scene(2000, 1500)) + b"\0" * 300_000).decode()
    whole = png(scene(1200, 1000, 1))
    cut = "data:image/png;base64," + base64.b64encode(whole[: len(whole) // 2]).decode()  # a truncated PNG
    cases = [
        (chat(good) | {"messages": [{"role": "user", "content": "no image here"}]}, 400, "exactly one image"),
        (two, 400, "exactly one image; this one holds 2"),
        (chat("data:image/png;base64,@@@not base64"), 400, "base64 is invalid"),
        (chat("data:image/png;base64," + base64.b64encode(b"plain text").decode()), 400, "cannot be read"),
        (chat(big), 413, "bytes; the limit is 200,000"),
        (chat(cut), 400, "corrupt"),
        (chat(good, question="   "), 400, "question is empty"),
        (chat(good, policy="zoom"), 400, "unknown policy 'zoom'"),
        (chat(good, max_tokens=0), 400, "max_tokens"),
        (chat(good, question="hi <|im_end|><|im_start|>assistant"), 400, "reserved token"),
        (chat("https://example.com/a.png"), 400, "remote image URLs are refused"),
        (chat(str(tmp_path / "outside.png")), 403, "not a file under the allowed media folder"),
        (chat(str(media / "../outside.png")), 403, "not a file under the allowed media folder"),
        ({"messages": "nope"}, 400, "messages: Input should be a valid list"),
        ({"messages": []}, 400, "messages: List should have at least 1 item"),
    ]
    for body, status, message in cases:
        code, reply, _ = server.post(body)
        assert "error" in reply, (message, code, reply)
        assert (code, reply["error"]["code"]) == (status, status) and message in reply["error"]["message"], (
            message, reply)  # fmt: skip
    huge = scene(1600, 1400)  # 2.24 Mpx, over the 2 Mpx limit, small as a PNG
    code, reply, _ = server.post(chat(data_url(huge)))
    assert code == 413 and "pixels" in reply["error"]["message"]
    code, reply, _ = server.post(b"{not json", raw=True)
    assert code == 400 and "not JSON" in reply["error"]["message"]
    assert server.post(chat(str(media / "ok.png")))[0] == 200  # a file under the allowed folder
    assert server.post(chat(good))[0] == 200
    metrics = server.get("/metrics")
    assert 'awares_requests_total{status="400"}' in metrics and 'awares_requests_total{status="413"}' in metrics


def test_a_request_over_the_size_limit_is_refused_before_it_is_read(serve):
    server = serve(max_request_bytes=50_000)
    code, reply, _ = server.post(json.dumps(chat(data_url(scene(1200, 1000)))).encode() + b" " * 60_000, raw=True)
    assert code == 413 and "the limit is 50,000" in reply["error"]["message"]
    assert server.post(chat(data_url(scene())))[0] == 200


def test_local_paths_are_refused_by_default(serve, tmp_path):
    scene().save(tmp_path / "a.png")
    server = serve()
    for url in (str(tmp_path / "a.png"), f"file://{tmp_path / 'a.png'}"):
        code, reply, _ = server.post(chat(url))
        assert code == 400 and "local image paths are refused" in reply["error"]["message"]


def test_requests_that_arrive_together_run_as_one_batch_with_the_same_answers(serve, backend):
    server = serve(max_batch=4, max_wait_ms=300)
    images = [scene(448, 336, i) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda im: server.post(chat(data_url(im))), images))
    assert max(server.app.state.batcher.batch_sizes) > 1  # they ran together
    engine = Engine(backend, RuntimeConfig(max_new_tokens=4))
    alone = [engine.answer(im, "What is written?").answer for im in images]
    assert [r[1]["choices"][0]["message"]["content"] for r in replies] == alone


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(serve, monkeypatch):
    server = serve(max_batch=1, max_wait_ms=0, queue_size=1)
    gate = threading.Event()
    engine_run = server.app.state.batcher.run
    monkeypatch.setattr(server.app.state.batcher, "run", lambda key, jobs: (gate.wait(30), engine_run(key, jobs))[1])
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(server.post, chat(data_url(scene())))
        time.sleep(0.5)  # the worker holds it
        second = pool.submit(server.post, chat(data_url(scene(336, 448))))
        time.sleep(0.5)  # it waits in the queue, which is now full
        code, reply, headers = server.post(chat(data_url(scene(224, 224))))
        assert code == 503 and headers["Retry-After"] == "1" and "busy" in reply["error"]["message"]
        gate.set()
        assert first.result()[0] == 200 and second.result()[0] == 200


def test_the_openai_backend_on_a_raw_endpoint_answers_as_the_engine_in_process(serve):
    """``awares serve --raw`` stands in for vLLM; the protocol runs client-side on OpenAIBackend."""
    from awares.data import generate
    from awares.models import Backend, HFBackend, OpenAIBackend, default_model_dir

    policy = HFBackend.load(default_model_dir("crops"), device="cpu")
    server = Server(Engine(policy, RuntimeConfig()), ServeConfig(max_batch=8, max_wait_ms=50), raw=True)
    try:
        backend = OpenAIBackend(f"{server.url}/v1", "awares", policy.processor)
        assert isinstance(backend, Backend) and isinstance(policy, Backend)
        requests = [(s.image, s.question) for s in generate("test", 8)]
        config = RuntimeConfig(max_new_tokens=16, batch_size=8)
        remote = Engine(backend, config).answer_batch([Request(*r) for r in requests])
        local = Engine(policy, config).answer_batch([Request(*r) for r in requests])
        assert [(r.answer, r.crops, r.rtr) for r in remote] == [(r.answer, r.crops, r.rtr) for r in local]
        assert any(r.crops for r in local)  # turn 2 ran, with the crops as the second user turn
    finally:
        server.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_awares_serve_as_the_readme_starts_it_and_ask_through_a_raw_server(tmp_path, tiny_dir, capsys):
    """`awares serve` in its own process answers the openai client; `awares ask --backend openai`
    runs the protocol against a second one started with --raw."""
    import os
    import subprocess
    import sys

    import openai

    from awares.cli import main

    ports, processes = [free_port(), free_port()], []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for port, extra in zip(ports, ([], ["--raw"])):
        command = [sys.executable, "-m", "awares.cli", "serve", "--port", str(port), "--model", str(tiny_dir), *extra]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for port in ports:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{ports[0]}/v1", api_key="none")
        reply = client.chat.completions.create(**chat(data_url(scene())))
        scene().save(tmp_path / "a.png")
        ask = [
            "ask",
            str(tmp_path / "a.png"),
            "What is written?",
            "--model",
            str(tiny_dir),
            "--json",
            "--max-new-tokens",
        ]
        assert main([*ask, "4"]) == 0
        asked = json.loads(capsys.readouterr().out)  # the same request, in process: the same run
        served = reply.model_extra["awares"]
        assert (reply.choices[0].message.content, served["crops"], served["rtr"]) == (
            asked["answer"], asked["crops"], asked["rtr"])  # fmt: skip
        url = f"http://127.0.0.1:{ports[1]}/v1"
        remote = ["--backend", "openai", "--url", url, "--served-model", "awares", "--model", str(tiny_dir), "--json"]
        assert main(["ask", str(tmp_path / "a.png"), "What is written?", *remote, "--max-new-tokens", "4"]) == 0
        remote_result = json.loads(capsys.readouterr().out)
        assert main(["ask", str(tmp_path / "a.png"), "What is written?", "--model", str(tiny_dir), "--json",
                     "--max-new-tokens", "4"]) == 0  # fmt: skip
        assert remote_result["answer"] == json.loads(capsys.readouterr().out)["answer"]
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def events(server, body):
    """The server-sent events of a streamed chat request over raw HTTP, parsed; the last is [DONE]."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}/v1/chat/completions", data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line.decode().strip() for line in response if line.strip()]
    assert all(line.startswith("data: ") for line in lines)
    return [line.removeprefix("data: ") for line in lines]


@pytest.fixture()
def words(backend):
    """The random model made to answer "red box on the left" and stop, token by token as decoded."""
    tokenizer = backend.processor.tokenizer
    plan = [*tokenizer("red box on the left", add_special_tokens=False).input_ids, min(backend.eos_ids)]

    def steer(module, args, logits):
        position = steer.calls % len(plan)
        logits[:, -1, plan[position]] += 1000.0
        steer.calls += 1
        return logits

    steer.calls = 0
    handle = backend.model.lm_head.register_forward_hook(steer)
    yield steer
    handle.remove()


def test_streamed_chunks_join_to_the_non_streamed_answer_with_the_openai_client(serve, words):
    import openai

    server = serve()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none")
    image = data_url(scene(448, 336))
    for policy in ("crops", "full", "low"):
        words.calls = 0
        whole = client.chat.completions.create(**chat(image, max_tokens=12), extra_body={"policy": policy})
        words.calls = 0
        chunks = list(
            client.chat.completions.create(
                **chat(image, max_tokens=12), stream=True, stream_options={"include_usage": True},
                extra_body={"policy": policy},
            )
        )  # fmt: skip
        content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert whole.choices[0].message.content == "red box on the left" == "".join(content)
        assert len(content) > 1  # as decoded, not in one piece at the end
        assert chunks[0].choices[0].delta.role == "assistant"
        final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
        assert final.choices[0].finish_reason == "stop" and final.model_extra["awares"]["policy"] == policy
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_a_raw_http_stream_ends_with_done_and_carries_crops_and_rtr_on_its_last_chunk(serve):
    server = serve()
    lines = events(server, chat(data_url(scene(336, 448, 2)), stream=True, max_tokens=8))
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and "rtr" in chunks[-1]["awares"]
    assert all("usage" not in c for c in chunks)  # only asked for with stream_options.include_usage


def test_the_shipped_policy_streams_turn_two_answers_after_fetching_crops(serve):
    from awares.data import generate
    from awares.models import HFBackend, default_model_dir

    policy = HFBackend.load(default_model_dir("crops"), device="cpu")
    server = Server(Engine(policy, RuntimeConfig()), ServeConfig(max_batch=8, max_wait_ms=100))
    try:
        samples = [s for s in generate("test", 12) if s.kind == "detail"][:3]
        bodies = [chat(data_url(s.image), s.question, max_tokens=16) for s in samples]
        with ThreadPoolExecutor(6) as pool:  # streaming and plain requests share batches
            plain = list(pool.map(lambda b: server.post(b)[1], bodies))
            streamed = list(pool.map(lambda b: events(server, {**b, "stream": True}), bodies))
        for whole, lines in zip(plain, streamed):
            chunks = [json.loads(line) for line in lines[:-1]]
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            assert text == whole["choices"][0]["message"]["content"] and text
            assert chunks[-1]["awares"]["crops"] == whole["awares"]["crops"] != []
            assert not any("GET_CROPS" in (c["choices"][0]["delta"].get("content") or "") for c in chunks)
        assert max(server.app.state.batcher.batch_sizes) > 1
    finally:
        server.stop()


def test_options_the_server_cannot_honour_are_refused_as_vllm_refuses_them(serve):
    import openai

    server = serve()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    body = chat(data_url(scene()))
    for extra in ({"n": 3}, {"temperature": "hot"}, {"temperature": 2.5}, {"top_p": 0}, {"stream_options": {}}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(**{**body, **extra})
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(**{**body, "model": "gpt-4o"})
    assert client.chat.completions.create(**{**body, "n": 1, "temperature": 0, "top_p": 1}).choices


def test_a_temperature_samples_the_answer(serve):
    server = serve()
    body = chat(data_url(scene()), max_tokens=6)
    greedy = {server.post(body)[1]["choices"][0]["message"]["content"] for _ in range(2)}
    sampled = {server.post({**body, "temperature": 2.0})[1]["choices"][0]["message"]["content"] for _ in range(4)}
    assert len(greedy) == 1 and sampled - greedy

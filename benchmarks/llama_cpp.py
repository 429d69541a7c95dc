"""AwaRes on llama.cpp's llama-server: agreement with the in-process backend, latency and accuracy per
policy, and what `awares serve` adds over the engine's own time. Needs `bash scripts/llama_server.sh`.

    python benchmarks/llama_cpp.py [--data synthetic:test] [--n 200] [--outtype f16] [--llama-args '--poll 0']
                                   [--out runs/bench/llama_cpp-test.json]

The shipped policy and base are exported to GGUF (`awares export gguf`) and each served by one
llama-server (2 threads, one slot). Per sample, one request at a time, the policies take turns:
``full`` and ``low`` on the base, ``crops`` (AwaRes) on the policy with its turns constrained by
llama.cpp's grammar (``--guided-calls``, as the in-process backend constrains a call once it
starts), each run by awares' engine with the OpenAI backend; the in-process HF backend answers the
same ``crops`` request, and the share of samples with the same answer, crops and RTR is reported.
Then the same AwaRes requests go through `awares serve --backend openai` (a PNG upload, as a client
sends it, on a kept-alive connection), and straight to llama-server from a minimal client that does
only the protocol's own work (the PNG decoded, view, crops, PNG data URLs, two POSTs with the same
grammar): the difference is what awares adds per request. Each timed AwaRes request starts on a
slot whose cached prompt is another's, and the host-memory prompt cache is off, so no path reuses
another path's run on the same image. Exact-match accuracy is measured on the answers that were
timed; means over samples.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from awares.crops import extract_crops, low_res_view
from awares.data import resolve
from awares.evaluate.metrics import exact_match
from awares.export import export_gguf, llama_server
from awares.images import load_image
from awares.models import HFBackend, OpenAIBackend, default_model_dir
from awares.models.openai_backend import to_openai
from awares.models.servers import engine_named
from awares.protocol import SYSTEM_PROMPT, turn1_messages, turn2_messages
from awares.runtime import Engine, RuntimeConfig

# One slot and no host-memory prompt cache: a request reuses only the slot's previous prompt (turn 2
# reuses turn 1), never an earlier path's run on the same image.
SERVER_ARGS = ("-t", "2", "-np", "1", "--cache-ram", "0")
CALL = re.compile(r"GET_CROPS: \[((?:'[0-8]'|'all')(?:, '[0-8]')*)\]")
GUIDED = engine_named("llama.cpp").guided
FLUSH = {"model": "awares", "messages": [{"role": "user", "content": "flush"}], "max_tokens": 1}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keep_alive(url: str) -> http.client.HTTPConnection:
    """One connection to ``url``'s host, reused by every request a client sends."""
    return http.client.HTTPConnection(url.removeprefix("http://").split("/")[0], timeout=60)


class MinimalClient:
    """AwaRes straight on llama-server, as a client without awares would run it: the image decoded,
    the view, a PNG data URL, one POST (a kept-alive connection, the body built by hand), the call
    parsed, the crops, one more POST. The answer, and the seconds it took."""

    def __init__(self, url: str):
        self.connection = keep_alive(url)

    def post(self, messages: list) -> str:
        body = json.dumps({"messages": to_openai(messages), "max_tokens": 16, "temperature": 0, **GUIDED})
        self.connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        return json.loads(self.connection.getresponse().read())["choices"][0]["message"]["content"]

    def answer(self, path: str, question: str) -> tuple[str, float]:
        began = time.perf_counter()
        image = load_image(path)  # from the file, as the server decodes the upload
        turn1 = turn1_messages(low_res_view(image), question, SYSTEM_PROMPT)
        text = self.post(turn1)
        call = CALL.fullmatch(text)
        if call:
            crops = extract_crops(image, tuple(call.group(1).replace("'", "").split(", ")))
            text = self.post(turn2_messages(turn1, text, crops))
        return text, time.perf_counter() - began


def flush(url: str) -> None:
    """Replace the slot's cached prompt (so the next request starts as cold as any other)."""
    request = urllib.request.Request(
        url + "/chat/completions", json.dumps(FLUSH).encode(), {"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=60).close()


def png_data_url(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


class ServedClient:
    """A client of `awares serve` that keeps its connection alive, as ``MinimalClient`` does (a new
    connection per request would time the client's connection set-up as the server's)."""

    def __init__(self, url: str):
        self.connection = keep_alive(url)

    def answer(self, image_url: str, question: str) -> tuple[dict, float]:
        body = json.dumps({"model": "awares", "max_tokens": 16, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": question}]}]})  # fmt: skip
        began = time.perf_counter()
        self.connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        out = json.loads(self.connection.getresponse().read())
        return out, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic:test")
    parser.add_argument("--n", type=int, default=200, help="samples (the first n of --data)")
    parser.add_argument("--outtype", default="f16")
    parser.add_argument("--gguf", default="runs/bench/gguf", help="where the exported models go")
    parser.add_argument("--out", default="")
    parser.add_argument("--llama-args", default="", help="more llama-server arguments (e.g. '--poll 0')")
    args = parser.parse_args()
    records = resolve(args.data)[0][: args.n]
    images = [load_image(r.image) for r in records]
    dirs = {"policy": default_model_dir("crops"), "base": default_model_dir("full")}
    config = RuntimeConfig(max_new_tokens=16, batch_size=1)

    with ExitStack() as stack:
        urls = {}
        for name, model in dirs.items():
            exported = export_gguf(model, Path(args.gguf) / f"{name}-{args.outtype}", args.outtype)
            urls[name] = stack.enter_context(
                llama_server(exported, free_port(), *SERVER_ARGS, *shlex.split(args.llama_args))
            )
        guided = {"policy": True, "base": False}  # the policy's turns constrained by llama.cpp's grammar
        remote = {
            name: Engine(OpenAIBackend.connect(urls[name], "awares", dirs[name], guided_calls=guided[name]), config)
            for name in dirs
        }
        engines = {"full": remote["base"], "low": remote["base"], "crops": remote["policy"]}
        local = Engine(HFBackend.load(dirs["policy"]), config)

        for policy, engine in engines.items():  # warm-up
            engine.answer(images[0], records[0].question, policy)
        rows = []
        for image, record in zip(images, records):
            row = {"id": record.id, "seconds": {}, "correct": {}}
            for policy, engine in engines.items():
                flush(urls["base" if policy != "crops" else "policy"])
                began = time.perf_counter()
                result = engine.answer(image, record.question, policy)
                row["seconds"][policy] = time.perf_counter() - began
                row["correct"][policy] = exact_match(result.answer, record.answers)
                if policy == "crops":
                    mine = local.answer(image, record.question)
                    row["same_as_hf"] = (result.answer, result.crops, result.rtr) == (mine.answer, mine.crops, mine.rtr)
                    row["rtr"] = result.rtr
                    row["answer"], row["crops"] = result.answer, list(result.crops)
            rows.append(row)

        port = free_port()
        command = [sys.executable, "-m", "awares.cli", "serve", "--port", str(port), "--backend", "openai",
                   "--url", urls["policy"], "--served-model", "awares", "--processor", str(dirs["policy"]),
                   "--guided-calls"]  # fmt: skip
        front = stack.enter_context(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        stack.callback(front.terminate)
        serve_url = f"http://127.0.0.1:{port}/v1"
        for _ in range(600):
            try:
                urllib.request.urlopen(serve_url + "/models", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        uploads = [png_data_url(r.image) for r in records]
        served = ServedClient(serve_url)
        served.answer(uploads[0], records[0].question)  # warm-up
        minimal = MinimalClient(urls["policy"])
        for row, record, upload in zip(rows, records, uploads):
            flush(urls["policy"])
            reply, row["serve_s"] = served.answer(upload, record.question)
            flush(urls["policy"])
            answer = reply["choices"][0]["message"]["content"]
            row["serve_same"] = (answer, reply["awares"]["crops"]) == (row["answer"], row["crops"])
            answer, row["engine_s"] = minimal.answer(record.image, record.question)
            row["minimal_same"] = answer == row["answer"]

    mean = {p: statistics.fmean(r["seconds"][p] for r in rows) for p in engines}
    summary = {
        "data": args.data,
        "samples": len(rows),
        "outtype": args.outtype,
        "same_as_hf": sum(r["same_as_hf"] for r in rows) / len(rows),
        "serve_same_as_engine": sum(r["serve_same"] for r in rows) / len(rows),
        "minimal_client_same": sum(r["minimal_same"] for r in rows) / len(rows),
        "accuracy": {p: 100 * statistics.fmean(r["correct"][p] for r in rows) for p in engines},
        "rtr_crops": statistics.fmean(r["rtr"] for r in rows),
        "mean_ms": {p: 1000 * v for p, v in mean.items()},
        "crops_over_full": mean["crops"] / mean["full"],
        "low_over_full": mean["low"] / mean["full"],
        "crops_ms": {
            "awares engine in process": 1000 * statistics.fmean(r["seconds"]["crops"] for r in rows),
            "awares serve": 1000 * statistics.fmean(r["serve_s"] for r in rows),
            "minimal client on llama-server": 1000 * statistics.fmean(r["engine_s"] for r in rows),
        },
    }
    summary["crops_ms"]["added by awares serve"] = (
        summary["crops_ms"]["awares serve"] - summary["crops_ms"]["minimal client on llama-server"]
    )
    out = Path(args.out or f"runs/bench/llama_cpp-{args.data.split(':')[1] if ':' in args.data else 'data'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""Where `awares serve`'s added time goes on llama.cpp: each step of the request handler, timed.

    python experiments/serve_overhead.py [--data synthetic:test] [--n 60]

The shipped policy on llama-server (exported as `benchmarks/llama_cpp.py` exports it, the same
server arguments), `awares serve`'s app around an engine with the OpenAI backend, served by uvicorn
in a thread of this process; a client on a kept-alive connection sends each sample's PNG. Every
handler step is wrapped with a timer: the whole handler, reading the upload (``prepare``: JSON,
checks, base64, PNG decode), the engine, the backend's POSTs to llama-server inside it, and building
the completion. Prints the mean ms per request of each, and what no step covers. Each request starts
on a slot holding another prompt, as in the benchmark. Needs `bash scripts/llama_server.sh`.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import statistics
import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from llama_cpp import SERVER_ARGS, ServedClient, flush, free_port, png_data_url  # noqa: E402

from awares.data import resolve  # noqa: E402
from awares.export import export_gguf, llama_server  # noqa: E402
from awares.models import OpenAIBackend, default_model_dir  # noqa: E402
from awares.models.endpoint import ChatClient  # noqa: E402
from awares.runtime import Engine, RuntimeConfig  # noqa: E402
from awares.serve import ServeConfig, create_app  # noqa: E402
from awares.serve.app import ChatHandler, serve_in_thread  # noqa: E402

SECONDS: dict[str, list[float]] = defaultdict(list)
HANDLER, CLIENT = "handler (whole request in the server)", "client (the whole request)"
STEPS = {  # what each timer wraps
    HANDLER: (ChatHandler, "__call__"),
    "prepare (read the upload)": (ChatHandler, "prepare"),
    "engine (Engine.answer_batch)": (Engine, "answer_batch"),
    "POSTs to llama-server": (ChatClient, "post"),
    "completion (the reply's object)": (ChatHandler, "completion"),
}


def timed(owner: type, name: str, label: str) -> None:
    function = getattr(owner, name)
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                SECONDS[label].append(time.perf_counter() - began)
    else:

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                SECONDS[label].append(time.perf_counter() - began)

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic:test")
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--gguf", default="runs/bench/gguf/policy-f16")
    args = parser.parse_args()
    records = resolve(args.data)[0][: args.n]
    for label, (owner, name) in STEPS.items():
        timed(owner, name, label)
    model = default_model_dir("crops")
    with ExitStack() as stack:
        url = stack.enter_context(llama_server(export_gguf(model, Path(args.gguf), "f16"), free_port(), *SERVER_ARGS))
        backend = OpenAIBackend.connect(url, "awares", model, guided_calls=True)
        engine = Engine(backend, RuntimeConfig(max_new_tokens=16, batch_size=1))
        server, base = serve_in_thread(create_app(engine, ServeConfig()))
        stack.callback(setattr, server, "should_exit", True)
        client = ServedClient(base + "/v1")
        client.answer(png_data_url(records[0].image), records[0].question)  # warm-up
        SECONDS.clear()
        for record in records:
            flush(url)
            _, seconds = client.answer(png_data_url(record.image), record.question)
            SECONDS[CLIENT].append(seconds)
    mean = {label: 1000 * sum(values) / len(records) for label, values in SECONDS.items()}
    mean["HTTP (client minus handler)"] = mean[CLIENT] - mean[HANDLER]
    mean["engine minus POSTs"] = mean["engine (Engine.answer_batch)"] - mean["POSTs to llama-server"]
    inside = ("prepare (read the upload)", "engine (Engine.answer_batch)", "completion (the reply's object)")
    mean["handler minus its steps (hops, body, JSON reply)"] = mean[HANDLER] - sum(mean[k] for k in inside)
    print(f"{args.data}, {len(records)} requests, mean ms per request")
    for label, ms in mean.items():
        print(f"{ms:8.2f}  {label}")
    print(f"median client ms: {1000 * statistics.median(SECONDS[CLIENT]):.2f}")


if __name__ == "__main__":
    main()

"""Load on `awares serve` over loopback: throughput, latency, statuses, and the dynamic-batching speed-up.

    python benchmarks/serve_load.py [--requests 192] [--clients 16] [--bad-fraction 0.2]
                                    [--max-batch 8] [--max-wait-ms 10] [--queue-size 64] [--time-limit 600]

Starts the server twice in this process (uvicorn on a free loopback port, the shipped policy): once
with dynamic batching (``--max-batch``), once one request at a time (``max_batch = 1``), and sends
both the same requests from ``--clients`` concurrent clients: benchmark questions, a share of them
broken (bad base64, no image, empty question). It reports per server the responses by status,
throughput, p50/p95 latency of the answered requests, and whether every request got exactly one
response; then the speed-up of batching as a ratio of the two wall times, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from awares.data import generate
from awares.models import HFBackend, default_model_dir
from awares.models.endpoint import data_url
from awares.runtime import Engine, RuntimeConfig
from awares.serve import ServeConfig, create_app, serve_in_thread


def bodies(n: int, bad_fraction: float, seed: int = 0) -> list[dict]:
    """``n`` request bodies: benchmark questions, ``bad_fraction`` of them broken in one of three ways."""
    rng = random.Random(seed)
    samples = list(generate("test", min(n, 64)))
    out = []
    for i in range(n):
        s = samples[i % len(samples)]
        content = [{"type": "image_url", "image_url": {"url": data_url(s.image)}}, {"type": "text", "text": s.question}]
        if rng.random() < bad_fraction:
            broken = rng.choice(["base64", "no image", "empty"])
            if broken == "base64":
                content[0]["image_url"]["url"] = "data:image/png;base64,@@@"
            elif broken == "no image":
                content = content[1:]
            else:
                content[1]["text"] = " "
        out.append({"model": "awares", "max_tokens": 16, "messages": [{"role": "user", "content": content}]})
    return out


def post(url: str, body: dict) -> tuple[int, float]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data, {"Content-Type": "application/json"})
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.perf_counter() - began


def load(engine: Engine, config: ServeConfig, requests: list[dict], clients: int, time_limit: float) -> dict:
    server, url = serve_in_thread(create_app(engine, config))
    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(post, url, body) for body in requests]
        results = [f.result(timeout=time_limit) for f in futures]
    wall = time.perf_counter() - began
    with urllib.request.urlopen(f"{url}/metrics") as response:
        metrics = response.read().decode()
    server.should_exit = True
    served = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("awares_requests_total{"))
    answered = [seconds for status, seconds in results if status == 200]
    return {
        "max_batch": config.max_batch,
        "statuses": dict(sorted(Counter(str(status) for status, _ in results).items())),
        "every_request_one_response": len(results) == len(requests) == served,
        "wall_s": wall,
        "answered_per_s": len(answered) / wall,
        "p50_s": statistics.median(answered) if answered else None,
        "p95_s": statistics.quantiles(answered, n=20)[-1] if len(answered) > 1 else None,
        "mean_batch": statistics.mean(server.config.app.state.batcher.batch_sizes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("crops")))
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--bad-fraction", type=float, default=0.2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--out", default="runs/bench/serve_load.json")
    args = parser.parse_args()

    engine = Engine(HFBackend.load(args.model), RuntimeConfig())
    requests = bodies(args.requests, args.bad_fraction)
    runs = {}
    for name, max_batch in (("batched", args.max_batch), ("one_at_a_time", 1)):
        config = ServeConfig(max_batch=max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size)
        runs[name] = load(engine, config, requests, args.clients, args.time_limit)
    report = {
        "model": args.model,
        "requests": args.requests,
        "clients": args.clients,
        "bad_fraction": args.bad_fraction,
        **runs,
        "batching_speedup": runs["one_at_a_time"]["wall_s"] / runs["batched"]["wall_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

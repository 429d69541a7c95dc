"""Load on `awares serve` over loopback: AwaRes (`policy=crops`) against full resolution, per data set.

    python benchmarks/serve_load.py [--data synthetic:test:64,synthetic:large:64] [--policies crops,full]
                                    [--requests 192] [--clients 16] [--bad-fraction 0.2] [--max-batch 8]
                                    [--batching] [--out runs/bench/serve_load.json]

For each data set and policy, a fresh server process (uvicorn on a free loopback port, the shipped
AwaRes policy, dynamic batching up to ``--max-batch``) gets the same requests from ``--clients``
concurrent clients: the set's questions, a share of them broken (bad base64, no image, empty
question), each asking for the policy in the request's ``policy`` field. It reports per server the
responses by status, answered requests per second, p50/p95 latency of the answered requests, the
accuracy of their answers, the server process's peak resident memory (and its rise over the idle
server), and whether every request got exactly one response; then AwaRes against full as ratios
measured in the same run. ``--batching`` adds a run of AwaRes one request at a time (``max_batch``
1) for the speed-up of dynamic batching.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from awares.data import resolve
from awares.evaluate.metrics import exact_match
from awares.images import load_image
from awares.models import HFBackend, default_model_dir
from awares.models.endpoint import data_url
from awares.runtime import Engine, RuntimeConfig
from awares.serve import ServeConfig, create_app, serve_in_thread


def bodies(data: str, policy: str, n: int, bad_fraction: float, seed: int = 0) -> list[tuple[dict, list[str]]]:
    """``n`` request bodies with their accepted answers, ``bad_fraction`` of them broken in one of three
    ways (the same ones, with the same seed, whatever the policy)."""
    rng = random.Random(seed)
    records, _ = resolve(data)
    urls = {r.id: data_url(load_image(r.image)) for r in records[:n]}
    out = []
    for i in range(n):
        r = records[i % len(records)]
        content = [{"type": "image_url", "image_url": {"url": urls[r.id]}}, {"type": "text", "text": r.question}]
        if rng.random() < bad_fraction:
            broken = rng.choice(["base64", "no image", "empty"])
            if broken == "base64":
                content[0]["image_url"]["url"] = "data:image/png;base64,@@@"
            elif broken == "no image":
                content = content[1:]
            else:
                content[1]["text"] = " "
        body = {
            "model": "awares",
            "policy": policy,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": content}],
        }
        out.append((body, r.answers))
    return out


def post(url: str, body: dict) -> tuple[int, float, str]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data, {"Content-Type": "application/json"})
    began = time.perf_counter()
    answer = ""
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            answer = json.loads(response.read())["choices"][0]["message"]["content"]
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    return status, time.perf_counter() - began, answer


def rss_mib() -> float:
    """This process's resident memory now (Linux)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def load(model: str, config: ServeConfig, requests: list[tuple[dict, list[str]]], clients: int) -> dict:
    """Serve ``requests`` from ``clients`` threads against a server in this process."""
    engine = Engine(HFBackend.load(model), RuntimeConfig())
    server, url = serve_in_thread(create_app(engine, config))
    idle = rss_mib()
    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda item: post(url, item[0]), requests))
    wall = time.perf_counter() - began
    with urllib.request.urlopen(f"{url}/metrics") as response:
        metrics = response.read().decode()
    server.should_exit = True
    served = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("awares_requests_total{"))
    answered = [
        (seconds, exact_match(answer, answers))
        for (status, seconds, answer), (_, answers) in zip(results, requests)
        if status == 200
    ]
    latencies = [seconds for seconds, _ in answered]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "max_batch": config.max_batch,
        "statuses": dict(sorted(Counter(str(status) for status, _, _ in results).items())),
        "every_request_one_response": len(results) == len(requests) == served,
        "wall_s": wall,
        "answered_per_s": len(answered) / wall,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p95_s": statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else None,
        "accuracy": 100 * statistics.fmean(ok for _, ok in answered) if answered else None,
        "mean_batch": statistics.mean(server.config.app.state.batcher.batch_sizes),
        "peak_rss_mib": peak,
        "peak_rise_mib": peak - idle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("crops")))
    parser.add_argument("--data", default="synthetic:test:64,synthetic:large:64")
    parser.add_argument("--policies", default="crops,full")
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--bad-fraction", type=float, default=0.2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--batching", action="store_true", help="also run AwaRes one request at a time")
    parser.add_argument("--child", nargs=3, metavar=("DATA", "POLICY", "MAX_BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="runs/bench/serve_load.json")
    args = parser.parse_args()

    if args.child:  # one server, in a process of its own so that its peak memory is its own
        data, policy, max_batch = args.child
        config = ServeConfig(max_batch=int(max_batch), max_wait_ms=args.max_wait_ms, queue_size=args.queue_size)
        requests = bodies(data, policy, args.requests, args.bad_fraction)
        print(json.dumps(load(args.model, config, requests, args.clients)))
        return

    runs = [(p, args.max_batch) for p in args.policies.split(",")] + ([("crops", 1)] if args.batching else [])
    report = {
        "model": args.model,
        "requests": args.requests,
        "clients": args.clients,
        "bad_fraction": args.bad_fraction,
    }
    for data in args.data.split(","):
        report[data] = {}
        for policy, max_batch in runs:
            name = policy if max_batch == args.max_batch else f"{policy}_one_at_a_time"
            command = [sys.executable, __file__, *sys.argv[1:], "--child", data, policy, str(max_batch)]
            child = subprocess.run(command, capture_output=True, text=True, check=True)
            report[data][name] = json.loads(child.stdout.strip().splitlines()[-1])
            print(data, name, json.dumps(report[data][name]), flush=True)
        served = report[data]
        if "crops" in served and "full" in served:
            served["crops_over_full_answered_per_s"] = (
                served["crops"]["answered_per_s"] / served["full"]["answered_per_s"]
            )
        if "crops_one_at_a_time" in served:
            served["batching_speedup"] = served["crops_one_at_a_time"]["wall_s"] / served["crops"]["wall_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

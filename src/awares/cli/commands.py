"""Each command: its options (``add_NAME``) next to what it does (``NAME``): parse, call a stage, print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..crops import CROP_NAMES
from ..data.benchmarks import TASKS
from ..data.synthetic import SPLIT_OFFSETS
from ..errors import InputError
from ..export import OUTTYPES
from ..images import load_image
from ..models.families import DEFAULT_FAMILY, FAMILIES
from ..runtime import POLICIES, POLICY_TABLE, SERVED_POLICIES, Result, policy_help
from .options import (
    FRACTION,
    POSITIVE,
    SEED,
    add_config_flags,
    add_data_options,
    add_model_options,
    config_overrides,
    crop_list,
    engine,
    engines,
    existing_file,
    existing_folder,
    folder,
    number,
    policy_list,
    shard,
)

Sub = Any  # argparse's subparsers action
SEED_HELP = "the run's seed instead of the config's (views, batches, rollouts): repeat a recipe over seeds"


def _crop_names(crop_ids: tuple[str, ...]) -> str:
    """Crop ids as ids with their regions (``[0] top-left, [5] top``): a bare ``0`` reads as a count."""
    return ", ".join(f"[{c}] {CROP_NAMES.get(c, 'whole image')}" for c in crop_ids) or "none"


def _describe(result: Result) -> str:
    t = result.tokens
    times = "  ".join(f"turn{i + 1} {s:.3f}s" for i, s in enumerate(result.seconds))
    return "\n".join(
        [
            f"answer: {result.answer}",
            f"policy: {result.policy}  parse: {result.parse_status}  crops: {_crop_names(result.crops)}"
            + (f"  ({result.parse_error})" if result.parse_error else ""),
            f"visual tokens: view {t.view} + crops {t.crops} of full {t.full}  RTR {result.rtr:.3f}",
            f"time: {times}",
        ]
    )


def add_ask(sub: Sub) -> None:
    ask = sub.add_parser("ask", help="answer a question about an image")
    ask.add_argument("image", type=existing_file, help="path to the image")
    ask.add_argument("question")
    ask.add_argument(
        "--policy",
        choices=POLICIES,
        default="crops",
        help=f"(default: crops) {policy_help()}",
    )
    ask.add_argument("--crops", type=crop_list, default=(), help="comma-separated crop ids for oracle, e.g. 0,5")
    ask.add_argument("--json", action="store_true", help="print the full result as JSON")
    add_model_options(ask)
    ask.set_defaults(func=ask_command)


def ask_command(args: argparse.Namespace) -> None:
    if POLICY_TABLE[args.policy].oracle_crops and not args.crops:
        raise InputError(f"the {args.policy} policy needs --crops, e.g. --crops 0,5")
    if not args.question.strip():
        raise InputError("the question is empty")
    image = load_image(args.image)  # fail on bad input before loading the model
    result = engine(args, args.policy).answer(image, args.question, args.policy, args.crops)
    if args.json:
        print(json.dumps({"image": str(args.image), "question": args.question, **result.to_dict()}, indent=2))
    else:
        print(_describe(result))


def add_demo(sub: Sub) -> None:
    demo = sub.add_parser("demo", help="run every policy on a generated high-resolution image")
    demo.add_argument("--out", type=folder, default="runs/demo", help="folder the demo images are written to")
    add_model_options(demo)
    demo.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> None:
    from ..crops import boxes_to_crops
    from ..data import generate

    by_policy = engines(args, POLICIES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = list(generate("test", 12))
    for sample in [next(s for s in samples if s.kind == k) for k in ("detail", "global")]:
        path = out / f"{sample.id}.png"
        sample.image.save(path)
        oracle = boxes_to_crops(sample.evidence, *sample.image.size).crop_ids if sample.kind == "detail" else ()
        print(f"\n=== {path} ({sample.kind})  Q: {sample.question}  ground truth: {sample.answers[0]}")
        for policy in POLICIES:
            result = by_policy[policy].answer(str(path), sample.question, policy, oracle_crops=oracle)
            print(f"[{policy}]\n{_describe(result)}")


def _records(args: argparse.Namespace) -> list[Any]:
    """``--data``'s records (or ``--task``'s), reporting skipped bad rows on stderr."""
    from ..data import load_records

    out = Path(args.out)
    records, errors = load_records(
        args.data, out, getattr(args, "task", None), getattr(args, "split", None), args.limit, args.allow_outside_images
    )
    if errors:
        print(f"awares: skipped {len(errors)} bad row(s); see {out / 'data.errors.jsonl'}", file=sys.stderr)
    return records


def add_eval(sub: Sub) -> None:
    ev = sub.add_parser("eval", help="evaluate policies on a dataset: accuracy, RTR, calls, latency")
    add_data_options(
        ev,
        None,
        "synthetic:SPLIT[:N], a dataset folder or a data.jsonl (default: synthetic:test; with --task, the hub)",
    )
    ev.add_argument("--policy", type=policy_list, default="full,low,crops,oracle", help="comma-separated policies")
    ev.add_argument("--out", type=folder, default="runs/eval", help="results folder (re-running resumes)")
    ev.add_argument("--batch-size", type=POSITIVE, default=8)
    ev.add_argument("--task", choices=TASKS, help="a Table-1 benchmark: lmms-eval's copy on the hub, or --data")
    ev.add_argument("--split", help="the split of a saved DatasetDict (default: its first, or lmms-eval's)")
    ev.add_argument(
        "--table1",
        action="store_true",
        help="run every Table-1 benchmark (from the hub, or a folder per benchmark under --data), print Table 1",
    )
    ev.add_argument("--name", help="name this run's results (one policy), e.g. sft: rows of several models, one table")
    add_model_options(ev)
    ev.set_defaults(func=eval_command)


def eval_command(args: argparse.Namespace) -> None:
    from ..evaluate import evaluate, evaluate_table1
    from ..paths import plain_name

    if args.name and len(args.policy) != 1:
        raise InputError("--name names the results of one policy; give a single --policy")
    names = [plain_name(args.name, "--name")] if args.name else args.policy
    by_policy = engines(args, args.policy)
    runs = {name: (policy, by_policy[policy]) for name, policy in zip(names, args.policy)}
    out = Path(args.out)
    if args.table1:
        root = Path(args.data) if args.data else None
        say = lambda text: print(text, end="" if text.endswith("\n") else "\n")  # noqa: E731
        table = evaluate_table1(runs, out, root, args.batch_size, args.limit, args.split, say)
        print(f"\n{table}", end="")
    else:
        records = _records(args)
        _, table = evaluate(runs, records, out, batch_size=args.batch_size, task=args.task)
        print(f"{args.task or args.data or 'synthetic:test'}:\n{table}", end="")
    print(f"results in {out}/ (summary.json, table.md, pareto.png, <name>.jsonl)")


def add_curate(sub: Sub) -> None:
    cur = sub.add_parser("curate", help="label samples, ground the evidence, write multi-turn trajectories")
    add_data_options(cur, "synthetic:train:2000", "synthetic:SPLIT[:N], a folder or a data.jsonl")
    cur.add_argument("--out", type=folder, default="runs/curate", help="output folder (re-running resumes)")
    cur.add_argument(
        "--shard", type=shard, default=(0, 1), help="I/N: run the I-th of N shards (0-based); shards merge"
    )
    cur.add_argument("--batch-size", type=POSITIVE, default=8)
    cur.add_argument("--judge", choices=["rule", "llm"], default="rule")
    cur.add_argument("--anls-threshold", type=FRACTION, help="rule judge: also accept ANLS >= this")
    cur.add_argument("--numeric-tolerance", type=number(float, 0.0), default=0.0, help="rule judge: relative tolerance")
    cur.add_argument("--judge-url", help="LLM judge: OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    cur.add_argument("--judge-model", help="LLM judge: model name on that server")
    cur.add_argument(
        "--judge-template", type=existing_file, help="LLM judge: prompt file with {question} {answers} {prediction}"
    )
    cur.add_argument(
        "--oracle",
        choices=["gt", "ocr", "vlm", "attention"],
        default="gt",
        help="gt: the dataset's boxes; attention: the model's own attention at full resolution",
    )
    cur.add_argument("--oracle-url", help="VLM oracle: OpenAI-compatible base URL")
    cur.add_argument("--oracle-model", help="VLM oracle: grounding model name (boxes 0-1000)")
    cur.add_argument(
        "--min-coverage", type=number(float, 0.0, 1.0, low_open=True), default=1.0, help="evidence fraction to cover"
    )
    cur.add_argument("--keep-unsolvable", action="store_true", help="keep samples no view answered")
    cur.add_argument("--direct-ratio", type=number(float, 0.0), help="at most this many direct per crop trajectory")
    add_model_options(cur)
    cur.set_defaults(func=curate_command)


def curate_command(args: argparse.Namespace) -> None:
    from ..curate import CurateConfig, curate, make_judge, make_oracle

    config = CurateConfig(
        out_dir=args.out,
        batch_size=args.batch_size,
        min_coverage=args.min_coverage,
        keep_unsolvable=args.keep_unsolvable,
        direct_ratio=args.direct_ratio,
        shard=args.shard[0],
        num_shards=args.shard[1],
    )
    judge = make_judge(
        args.judge, args.anls_threshold, args.numeric_tolerance, args.judge_url, args.judge_model, args.judge_template
    )
    base = engine(args, "full")
    oracle = make_oracle(args.oracle, args.oracle_url, args.oracle_model, base)
    summary = curate(_records(args), base, judge, oracle, config)
    print(json.dumps(summary, indent=2))
    print(f"trajectories in {Path(args.out) / 'trajectories.jsonl'}, summary in {Path(args.out) / 'summary.json'}")


def add_synth(sub: Sub) -> None:
    synth = sub.add_parser("synth", help="export a split of the synthetic benchmark (JSONL + images)")
    synth.add_argument(
        "--split", choices=list(SPLIT_OFFSETS), default="test", help="large, xlarge: held-out 0.3-0.45 and 0.45-1.6 MP"
    )
    synth.add_argument("--n", type=POSITIVE, default=400)
    synth.add_argument("--detail-fraction", type=FRACTION, default=0.4)
    synth.add_argument("--out", type=folder, required=True, help="folder for data.jsonl and images/")
    synth.set_defaults(func=synth_command)


def synth_command(args: argparse.Namespace) -> None:
    from ..data import generate, write_dataset

    out = write_dataset(generate(args.split, args.n, args.detail_fraction), args.out, total=args.n)
    print(out / "data.jsonl")


def _seeded(config: Any, args: argparse.Namespace) -> Any:
    """``config`` with ``--seed`` on top, when given (0 included)."""
    return config if args.seed is None else config.with_values({"seed": args.seed}, "--seed")


def add_train(sub: Sub) -> None:
    stages = sub.add_parser("train", help="training stages").add_subparsers(dest="stage", required=True)
    base = stages.add_parser("base", help="train the tiny base VLM on the synthetic benchmark")
    base.add_argument("config", nargs="?", type=existing_file, help="TOML config (default: built-in defaults)")
    base.add_argument("--output-dir", type=folder)
    base.add_argument("--init", type=folder, help="a trained base to train further (configs/ground.toml)")
    base.add_argument("--max-steps", type=int, help="stop after this many steps instead of the config's")
    base.add_argument("--seed", type=SEED, help=SEED_HELP)
    base.set_defaults(func=train_base_command)
    from ..train.config import GRPOConfig, SFTConfig

    for name, func, cls, text in [
        ("sft", train_sft_command, SFTConfig, "cold-start SFT on curated trajectories (tool-call turn weighted)"),
        ("grpo", train_grpo_command, GRPOConfig, "multi-turn GRPO: correctness minus crop cost, from the SFT policy"),
    ]:
        stage = stages.add_parser(name, help=text)
        stage.add_argument("config", nargs="?", type=existing_file, help="TOML config (default: built-in defaults)")
        stage.add_argument("--data", type=existing_file, help="trajectories.jsonl from `awares curate`")
        stage.add_argument("--model", help="checkpoint to start from: a folder or a hub id")
        stage.add_argument("--output-dir", type=folder)
        stage.add_argument("--seed", type=SEED, help=SEED_HELP)
        add_config_flags(stage, cls, {"data", "model", "output_dir", "seed"})
        stage.set_defaults(func=func)


def train_base_command(args: argparse.Namespace) -> None:
    from ..train.base import BaseTrainConfig, train_base

    config = BaseTrainConfig.load(args.config, output_dir=args.output_dir, init=args.init, max_steps=args.max_steps)
    print(train_base(_seeded(config, args)))


def _stage_config(cls: Any, args: argparse.Namespace) -> Any:
    """A training config from ``args.config`` (TOML) with every option given on the command line on
    top, zeros and false included."""
    return cls.load(args.config).with_values(config_overrides(args, cls), "the command line")


def train_sft_command(args: argparse.Namespace) -> None:
    from ..train.sft import SFTConfig, train_sft

    print(train_sft(_stage_config(SFTConfig, args)))


def train_grpo_command(args: argparse.Namespace) -> None:
    from ..train.grpo import GRPOConfig, train_grpo

    print(train_grpo(_stage_config(GRPOConfig, args)))


def add_pipeline(sub: Sub) -> None:
    pipe = sub.add_parser("pipeline", help="every stage in order: base, ground, curate, SFT, GRPO, eval (resumable)")
    pipe.add_argument(
        "config", nargs="?", type=existing_file, help="TOML pipeline config (default: configs/pipeline.toml values)"
    )
    pipe.add_argument("--out", type=folder, help="output folder (default: the config's out_dir)")
    pipe.add_argument(
        "--base-model", type=folder, help="a trained (grounded) VLM to start from: no base or ground stage"
    )
    pipe.set_defaults(func=pipeline_command)


def pipeline_command(args: argparse.Namespace) -> None:
    from ..pipeline import PipelineConfig, run_pipeline

    # A checkpoint named here is the base of curation as it is (a 7B instruct model needs no tiny
    # grounding stage); a config's own `base_model` keeps its `ground` stages (configs/all-sizes/).
    ground = "" if args.base_model else None
    config = PipelineConfig.load(args.config, out_dir=args.out, base_model=args.base_model, ground=ground)
    run_pipeline(config)
    print(f"results in {Path(config.out_dir) / 'eval'}/ (summary.json, table.md, pareto.png)")


def add_serve(sub: Sub) -> None:
    serve = sub.add_parser("serve", help="an OpenAI-compatible HTTP API running the protocol, with dynamic batching")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=number(int, 0, 65535), default=8000)
    serve.add_argument("--model-name", default="awares", help="the model id clients name (default awares)")
    serve.add_argument("--max-batch", type=POSITIVE, default=8, help="requests run together at most")
    serve.add_argument("--max-wait-ms", type=number(float, 0.0), default=10.0, help="wait for a batch to fill")
    serve.add_argument("--queue-size", type=POSITIVE, default=64, help="waiting requests; beyond, 503")
    serve.add_argument("--max-request-bytes", type=POSITIVE, default=32 << 20, help="larger bodies get 413")
    serve.add_argument("--max-image-bytes", type=POSITIVE, default=20 << 20)
    serve.add_argument("--max-image-pixels", type=POSITIVE, default=50_000_000)
    serve.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs")
    serve.add_argument(
        "--allowed-local-media-path", type=existing_folder, help="read image paths under this folder only"
    )
    serve.add_argument("--raw", action="store_true", help="a plain VLM endpoint: no protocol, whole conversations")
    add_model_options(serve)
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> None:
    import uvicorn

    from ..serve import Limits, ServeConfig, create_app

    limits = Limits(
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        allowed_local_media_path=args.allowed_local_media_path,
        allow_remote_images=args.allow_remote_images,
    )
    config = ServeConfig(
        model_name=args.model_name,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        max_request_bytes=args.max_request_bytes,
        limits=limits,
    )
    # each policy on the checkpoint `awares ask` runs it with (one model where --model names it)
    served = engine(args, "crops") if args.raw else engines(args, SERVED_POLICIES)
    uvicorn.run(create_app(served, config, raw=args.raw), host=args.host, port=args.port)


def add_build_tiny(sub: Sub) -> None:
    tiny = sub.add_parser("build-tiny", help="build a random-init tiny checkpoint with its processor, offline")
    tiny.add_argument("output", type=folder)
    tiny.add_argument("--seed", type=SEED, default=0)
    tiny.add_argument("--family", choices=list(FAMILIES), default=DEFAULT_FAMILY, help="model type (%(default)s)")
    tiny.set_defaults(func=build_tiny_command)


def build_tiny_command(args: argparse.Namespace) -> None:
    from ..models import TinyConfig, build_tiny

    print(build_tiny(args.output, TinyConfig(family=args.family, seed=args.seed)))


def add_export(sub: Sub) -> None:
    formats = sub.add_parser("export", help="write a checkpoint in another engine's format").add_subparsers(
        dest="format", required=True
    )
    gguf = formats.add_parser("gguf", help="llama.cpp: model and mmproj GGUF files, and the llama-server command")
    gguf.add_argument("--model", help="a local checkpoint folder or a hub id (default: the shipped AwaRes policy)")
    gguf.add_argument("--revision", help="with a hub id: a branch, tag or commit (default: main)")
    gguf.add_argument("--out", type=folder, required=True, help="folder for the GGUF files")
    gguf.add_argument("--outtype", choices=OUTTYPES, default="f16", help="weight type (%(default)s)")
    gguf.set_defaults(func=export_gguf_command)


def export_gguf_command(args: argparse.Namespace) -> None:
    from ..export import export_gguf
    from ..hub import is_repo_id
    from ..models import default_model_dir
    from ..models.hf import model_dir

    model = model_dir(args.model or default_model_dir("crops"), args.revision)
    hub_id = args.model if args.model and is_repo_id(args.model) else None
    exported = export_gguf(model, Path(args.out), args.outtype, name=hub_id)
    print(f"{exported.model}\n{exported.mmproj}\nserve it with:\n  {exported.server_command}")


COMMANDS = (
    add_ask,
    add_demo,
    add_eval,
    add_curate,
    add_synth,
    add_train,
    add_pipeline,
    add_serve,
    add_build_tiny,
    add_export,
)

"""The ``awares`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .crops import CROP_IDS
from .data.benchmarks import TASKS
from .data.synthetic import SPLIT_OFFSETS
from .errors import AwaresError, InputError
from .images import load_image
from .runtime import POLICIES, Engine, Result, RuntimeConfig


def _number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: a ``kind`` number within ``[low, high]`` (``(low, high]`` if ``low_open``)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if value != value or (low is not None and (value <= low if low_open else value < low)):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be <= {high}")
        return value

    return parse


def FOLDER(text: str) -> str:  # noqa: N802 (an argparse type, named like the others)
    """An argparse type: a folder to write into (made if missing); an existing file is refused."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    return text


def EXISTING_FOLDER(text: str) -> str:  # noqa: N802
    """An argparse type: a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} {'is a file' if Path(text).exists() else 'does not exist'}; give a folder"
        )
    return text


def EXISTING_FILE(text: str) -> str:  # noqa: N802
    """An argparse type: a file that exists (a folder is refused)."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(
            f"{text} {'is a folder' if Path(text).exists() else 'does not exist'}; give a file"
        )
    return text


POSITIVE = _number(int, 1)
FRACTION = _number(float, 0.0, 1.0)  # [0, 1]
SCALE = _number(float, 0.0, 1.0, low_open=True)  # (0, 1]
SEED_HELP = "the run's seed instead of the config's (views, batches, rollouts): repeat a recipe over seeds"


def _model_dir(args: argparse.Namespace, policy: str) -> Path:
    """``--model``, else the embedded default for ``policy``: the shipped AwaRes policy for ``crops``,
    the shipped base VLM for the baselines."""
    from .models import default_model_dir

    return Path(args.model) if args.model else default_model_dir(policy)


def _engine(args: argparse.Namespace, model_dir: Path) -> Engine:
    from .models import HFBackend, OpenAIBackend

    if args.backend == "openai":
        if not (args.url and args.served_model):
            raise InputError("--backend openai needs --url and --served-model")
        backend = OpenAIBackend.connect(
            args.url, args.served_model, args.processor or model_dir, args.revision, guided_calls=args.guided_calls
        )
    else:
        backend = HFBackend.load(
            model_dir, args.device, args.dtype, jump_forward=not args.no_jump_forward, revision=args.revision
        )
    config = RuntimeConfig(
        max_new_tokens=args.max_new_tokens,
        low_res_scale=args.low_res_scale,
        strict_parse=args.strict,
        max_question_tokens=args.max_question_tokens,
    )
    return Engine(backend, config)


def _engines(args: argparse.Namespace, policies: Sequence[str]) -> dict[str, Engine]:
    """An engine per policy; policies on the same model directory share one (the model loads once)."""
    by_dir: dict[Path, Engine] = {}
    engines = {}
    for policy in policies:
        model_dir = _model_dir(args, policy)
        if model_dir not in by_dir:
            by_dir[model_dir] = _engine(args, model_dir)
        engines[policy] = by_dir[model_dir]
    return engines


def _oracle_crops(text: str) -> tuple[str, ...]:
    crops = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in crops if c not in CROP_IDS]
    if unknown:
        raise InputError(f"unknown crop ids {unknown}; valid ids are {', '.join(CROP_IDS)}")
    return crops


def _describe(result: Result) -> str:
    t = result.tokens
    times = "  ".join(f"turn{i + 1} {s:.3f}s" for i, s in enumerate(result.seconds))
    return "\n".join(
        [
            f"answer: {result.answer}",
            f"policy: {result.policy}  parse: {result.parse_status}  crops: {', '.join(result.crops) or '-'}"
            + (f"  ({result.parse_error})" if result.parse_error else ""),
            f"visual tokens: view {t.view} + crops {t.crops} of full {t.full}  RTR {result.rtr:.3f}",
            f"time: {times}",
        ]
    )


def cmd_ask(args: argparse.Namespace) -> None:
    oracle = _oracle_crops(args.crops) if args.crops else ()
    if args.policy == "oracle" and not oracle:
        raise InputError("the oracle policy needs --crops, e.g. --crops 0,5")
    if not args.question.strip():
        raise InputError("the question is empty")
    image = load_image(args.image)  # fail on bad input before loading the model
    result = _engine(args, _model_dir(args, args.policy)).answer(image, args.question, args.policy, oracle)
    if args.json:
        print(json.dumps({"image": str(args.image), "question": args.question, **result.to_dict()}, indent=2))
    else:
        print(_describe(result))


def cmd_demo(args: argparse.Namespace) -> None:
    from .crops import boxes_to_crops
    from .data import generate

    engines = _engines(args, POLICIES)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = list(generate("test", 12))
    for sample in [next(s for s in samples if s.kind == k) for k in ("detail", "global")]:
        path = out / f"{sample.id}.png"
        sample.image.save(path)
        oracle = boxes_to_crops(sample.evidence, *sample.image.size).crop_ids if sample.kind == "detail" else ()
        print(f"\n=== {path} ({sample.kind})  Q: {sample.question}  ground truth: {sample.answers[0]}")
        for policy in POLICIES:
            result = engines[policy].answer(str(path), sample.question, policy, oracle_crops=oracle)
            print(f"[{policy}]\n{_describe(result)}")


def cmd_synth(args: argparse.Namespace) -> None:
    from .data import generate, write_dataset

    out = write_dataset(generate(args.split, args.n, args.detail_fraction), args.out, total=args.n)
    print(out / "data.jsonl")


def cmd_train_base(args: argparse.Namespace) -> None:
    from .train.base import BaseTrainConfig, train_base

    config = BaseTrainConfig.load(args.config, output_dir=args.output_dir, init=args.init, max_steps=args.max_steps)
    print(train_base(_seeded(config, args)))


def _records(args: argparse.Namespace, data: str | None = None, out: str | None = None, task: str | None = None):
    """The records of ``--data`` (or ``data``; read as benchmark ``task`` when given), the first
    ``--limit`` of them. Bad rows are skipped and listed, with their line and reason, in
    ``<--out or out>/data.errors.jsonl``."""
    from .data import resolve
    from .data.benchmarks import ROW_TO_FIELDS, load_benchmark
    from .data.records import write_row_errors

    spec, folder = data or args.data, Path(out or args.out)
    path = Path(spec) if spec else None
    if path and path.exists() and folder.resolve() == (path if path.is_dir() else path.parent).resolve():
        raise InputError(f"--out {folder} is the dataset's folder; give the results a folder of their own")
    if task:
        if path is not None and not path.exists():
            raise InputError(f"dataset {path} does not exist")
        records, errors = load_benchmark(task, path, args.split)
        spec = spec or f"{task} ({ROW_TO_FIELDS[task][0].repo_id})"
    else:
        records, errors = resolve(spec, allow_outside_images=args.allow_outside_images)
    write_row_errors(errors, folder / "data.errors.jsonl")
    if errors:
        print(
            f"awares: skipped {len(errors)} bad row(s) of {spec}; see {folder / 'data.errors.jsonl'}", file=sys.stderr
        )
    records = records[: args.limit] if args.limit else records
    if not records:
        raise InputError(f"no usable records in {spec}")
    return records


def _seeded(config: Any, args: argparse.Namespace) -> Any:
    """``config`` with ``--seed`` on top, when given (0 included)."""
    return config if args.seed is None else config.with_values({"seed": args.seed}, "--seed")


def _stage_config(cls: Any, args: argparse.Namespace) -> Any:
    """A training config from ``args.config`` (TOML) with --data, --model, --output-dir and --seed on top."""
    return _seeded(cls.load(args.config, data=args.data, model=args.model, output_dir=args.output_dir), args)


def cmd_train_sft(args: argparse.Namespace) -> None:
    from .train.sft import SFTConfig, train_sft

    print(train_sft(_stage_config(SFTConfig, args)))


def cmd_train_grpo(args: argparse.Namespace) -> None:
    from .train.grpo import GRPOConfig, train_grpo

    print(train_grpo(_stage_config(GRPOConfig, args)))


def cmd_eval(args: argparse.Namespace) -> None:
    from .evaluate import evaluate, table1
    from .paths import plain_name

    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise InputError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    if args.name and len(policies) != 1:
        raise InputError("--name names the results of one policy; give a single --policy")
    names = [plain_name(args.name, "--name")] if args.name else policies
    out = Path(args.out)
    if args.table1 and args.data:  # one folder per benchmark under --data, one results folder per benchmark
        tasks = [t for t in TASKS if (Path(args.data) / t).exists()]
        if not tasks:
            raise InputError(f"--table1 needs benchmark folders under {args.data}: any of {', '.join(TASKS)}")
        jobs = [(t, _records(args, str(Path(args.data) / t), str(out / t), t), out / t) for t in tasks]
    elif args.table1:  # every benchmark from the hub
        jobs = [(t, _records(args, None, str(out / t), t), out / t) for t in TASKS]
    else:
        data = args.data or (None if args.task else "synthetic:test")
        jobs = [(args.task, _records(args, data, task=args.task), out)]
    engines = _engines(args, policies)
    runs = {name: (policy, engines[policy]) for name, policy in zip(names, policies)}
    results = {}
    for task, records, folder in jobs:
        results[task], table = evaluate(runs, records, folder, batch_size=args.batch_size, task=task)
        print(f"{task or args.data or 'synthetic:test'}:\n{table}", end="")
    if args.table1:
        (out / "table1.md").write_text(table1(results))
        print(f"\n{table1(results)}", end="")
    print(f"results in {out}/ (summary.json, table.md, pareto.png, <name>.jsonl)")


def _shard(text: str) -> tuple[int, int]:
    try:
        shard, num_shards = (int(v) for v in text.split("/"))
    except ValueError as err:
        raise InputError(f"bad --shard {text!r}; use I/N, e.g. 0/4") from err
    if not 0 <= shard < num_shards:
        raise InputError(f"bad --shard {text!r}: I must be in 0..N-1")
    return shard, num_shards


def cmd_curate(args: argparse.Namespace) -> None:
    from .curate import CurateConfig, curate, make_judge, make_oracle

    shard, num_shards = _shard(args.shard)
    config = CurateConfig(
        out_dir=args.out,
        batch_size=args.batch_size,
        min_coverage=args.min_coverage,
        keep_unsolvable=args.keep_unsolvable,
        direct_ratio=args.direct_ratio,
        shard=shard,
        num_shards=num_shards,
    )
    judge = make_judge(
        args.judge, args.anls_threshold, args.numeric_tolerance, args.judge_url, args.judge_model, args.judge_template
    )
    oracle = make_oracle(args.oracle, args.oracle_url, args.oracle_model)
    records = _records(args)
    summary = curate(records, _engine(args, _model_dir(args, "full")), judge, oracle, config)
    print(json.dumps(summary, indent=2))
    print(f"trajectories in {Path(args.out) / 'trajectories.jsonl'}, summary in {Path(args.out) / 'summary.json'}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    from .pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig.load(args.config, out_dir=args.out, base_model=args.base_model)
    run_pipeline(config)
    print(f"results in {Path(config.out_dir) / 'eval'}/ (summary.json, table.md, pareto.png)")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from .serve import Limits, ServeConfig, create_app

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
    app = create_app(_engine(args, _model_dir(args, "crops")), config, raw=args.raw)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def cmd_build_tiny(args: argparse.Namespace) -> None:
    from .models import TinyConfig, build_tiny

    print(build_tiny(args.output, TinyConfig(seed=args.seed)))


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="a local checkpoint folder or a Hugging Face Hub id, e.g. Kimhi/AWARES-Qwen2.5-VL-7B (default: the "
        "shipped tiny AwaRes policy for `crops`, the shipped base VLM for full, low, oracle and curation)",
    )
    parser.add_argument("--revision", help="with a hub id: a branch, tag or commit (default: main)")
    parser.add_argument(
        "--backend", choices=["hf", "openai"], default="hf", help="hf: in process; openai: a VLM server (--url)"
    )
    parser.add_argument("--url", help="openai backend: the server's base URL, e.g. http://localhost:8000/v1")
    parser.add_argument("--served-model", help="openai backend: the model name on that server")
    parser.add_argument(
        "--processor", help="openai backend: a folder or hub id with the model's processor (default --model)"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA, float32 on CPU"
    )
    parser.add_argument("--max-new-tokens", type=_number(int, 1, 4096), default=32)
    parser.add_argument(
        "--low-res-scale", type=SCALE, default=0.5, help="side scale of the low-res view, in (0, 1] (default 0.5)"
    )
    parser.add_argument(
        "--max-question-tokens", type=POSITIVE, default=1024, help="longer questions are refused (default 1024)"
    )
    parser.add_argument("--strict", action="store_true", help="accept only the exact documented tool-call form")
    parser.add_argument(
        "--no-jump-forward",
        action="store_true",
        help="hf backend: decode a tool call token by token instead of appending its fixed syntax in one pass",
    )
    parser.add_argument(
        "--guided-calls",
        action="store_true",
        help="openai backend: constrain turns to a call or an answer with vLLM's structured outputs",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="awares", description="Resolution-aware VLM inference with high-res crops on demand."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question about an image")
    ask.add_argument("image", type=EXISTING_FILE, help="path to the image")
    ask.add_argument("question")
    ask.add_argument(
        "--policy",
        choices=POLICIES,
        default="crops",
        help="crops: AwaRes protocol (default); full/low: one pass; oracle: given --crops",
    )
    ask.add_argument("--crops", help="comma-separated crop ids for the oracle policy, e.g. 0,5")
    ask.add_argument("--json", action="store_true", help="print the full result as JSON")
    _model_options(ask)
    ask.set_defaults(func=cmd_ask)

    demo = sub.add_parser("demo", help="run every policy on a generated high-resolution image")
    demo.add_argument("--out", type=FOLDER, default="runs/demo", help="folder the demo images are written to")
    _model_options(demo)
    demo.set_defaults(func=cmd_demo)

    ev = sub.add_parser("eval", help="evaluate policies on a dataset: accuracy, RTR, calls, latency")
    ev.add_argument(
        "--data",
        help="synthetic:SPLIT[:N], a dataset folder or a data.jsonl (default: synthetic:test; with --task, the hub)",
    )
    ev.add_argument(
        "--allow-outside-images", action="store_true", help="accept image paths outside the dataset's folder"
    )
    ev.add_argument("--policy", default="full,low,crops,oracle", help="comma-separated policies")
    ev.add_argument("--limit", type=POSITIVE, help="only the first N records")
    ev.add_argument("--out", type=FOLDER, default="runs/eval", help="results folder (re-running resumes)")
    ev.add_argument("--batch-size", type=POSITIVE, default=8)
    ev.add_argument(
        "--task", choices=TASKS, help="a Table-1 benchmark: lmms-eval's copy on the hub, or its local copy in --data"
    )
    ev.add_argument("--split", help="the split of a saved DatasetDict (default: its first)")
    ev.add_argument(
        "--table1",
        action="store_true",
        help="run every Table-1 benchmark (from the hub, or a folder per benchmark under --data), print Table 1",
    )
    ev.add_argument("--name", help="name this run's results (one policy), e.g. sft: rows of several models, one table")
    _model_options(ev)
    ev.set_defaults(func=cmd_eval)

    cur = sub.add_parser("curate", help="label samples, ground the evidence, write multi-turn trajectories")
    cur.add_argument("--data", default="synthetic:train:2000", help="synthetic:SPLIT[:N], a folder or a data.jsonl")
    cur.add_argument(
        "--allow-outside-images", action="store_true", help="accept image paths outside the dataset's folder"
    )
    cur.add_argument("--limit", type=POSITIVE, help="only the first N records")
    cur.add_argument("--out", type=FOLDER, default="runs/curate", help="output folder (re-running resumes)")
    cur.add_argument("--shard", default="0/1", help="I/N: run the I-th of N shards (0-based); shards merge")
    cur.add_argument("--batch-size", type=POSITIVE, default=8)
    cur.add_argument("--judge", choices=["rule", "llm"], default="rule")
    cur.add_argument("--anls-threshold", type=FRACTION, help="rule judge: also accept ANLS >= this")
    cur.add_argument(
        "--numeric-tolerance", type=_number(float, 0.0), default=0.0, help="rule judge: relative tolerance"
    )
    cur.add_argument("--judge-url", help="LLM judge: OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    cur.add_argument("--judge-model", help="LLM judge: model name on that server")
    cur.add_argument(
        "--judge-template", type=EXISTING_FILE, help="LLM judge: prompt file with {question} {answers} {prediction}"
    )
    cur.add_argument("--oracle", choices=["gt", "ocr", "vlm"], default="gt", help="gt: the dataset's boxes")
    cur.add_argument("--oracle-url", help="VLM oracle: OpenAI-compatible base URL")
    cur.add_argument("--oracle-model", help="VLM oracle: grounding model name (boxes 0-1000)")
    cur.add_argument(
        "--min-coverage", type=_number(float, 0.0, 1.0, low_open=True), default=1.0, help="evidence fraction to cover"
    )
    cur.add_argument("--keep-unsolvable", action="store_true", help="keep samples no view answered")
    cur.add_argument("--direct-ratio", type=_number(float, 0.0), help="at most this many direct per crop trajectory")
    _model_options(cur)
    cur.set_defaults(func=cmd_curate)

    synth = sub.add_parser("synth", help="export a split of the synthetic benchmark (JSONL + images)")
    synth.add_argument(
        "--split", choices=list(SPLIT_OFFSETS), default="test", help="large, xlarge: held-out 0.3-0.45 and 0.45-1.6 MP"
    )
    synth.add_argument("--n", type=POSITIVE, default=400)
    synth.add_argument("--detail-fraction", type=FRACTION, default=0.4)
    synth.add_argument("--out", type=FOLDER, required=True, help="folder for data.jsonl and images/")
    synth.set_defaults(func=cmd_synth)

    train = sub.add_parser("train", help="training stages")
    stages = train.add_subparsers(dest="stage", required=True)
    base = stages.add_parser("base", help="train the tiny base VLM on the synthetic benchmark")
    base.add_argument("config", nargs="?", type=EXISTING_FILE, help="TOML config (default: built-in defaults)")
    base.add_argument("--output-dir", type=FOLDER)
    base.add_argument(
        "--init", type=FOLDER, help="a trained base to train further (configs/ground.toml); default: scratch"
    )
    base.add_argument("--max-steps", type=int, help="stop after this many steps instead of the config's")
    base.add_argument("--seed", type=_number(int, 0), help=SEED_HELP)
    base.set_defaults(func=cmd_train_base)
    for name, func, text in [
        ("sft", cmd_train_sft, "cold-start SFT on curated trajectories (tool-call turn weighted)"),
        ("grpo", cmd_train_grpo, "multi-turn GRPO: correctness minus crop cost, from the SFT policy"),
    ]:
        stage = stages.add_parser(name, help=text)
        stage.add_argument("config", nargs="?", type=EXISTING_FILE, help="TOML config (default: built-in defaults)")
        stage.add_argument("--data", type=EXISTING_FILE, help="trajectories.jsonl from `awares curate`")
        stage.add_argument("--model", help="checkpoint to start from: a folder or a hub id")
        stage.add_argument("--output-dir", type=FOLDER)
        stage.add_argument("--seed", type=_number(int, 0), help=SEED_HELP)
        stage.set_defaults(func=func)

    pipe = sub.add_parser("pipeline", help="every stage in order: base, ground, curate, SFT, GRPO, eval (resumable)")
    pipe.add_argument(
        "config", nargs="?", type=EXISTING_FILE, help="TOML pipeline config (default: configs/pipeline.toml values)"
    )
    pipe.add_argument("--out", type=FOLDER, help="output folder (default: the config's out_dir)")
    pipe.add_argument(
        "--base-model", type=FOLDER, help="a trained base VLM to start from instead of training one"
    )
    pipe.set_defaults(func=cmd_pipeline)

    serve = sub.add_parser("serve", help="an OpenAI-compatible HTTP API running the protocol, with dynamic batching")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_number(int, 0, 65535), default=8000)
    serve.add_argument("--model-name", default="awares", help="the model id clients name (default awares)")
    serve.add_argument("--max-batch", type=POSITIVE, default=8, help="requests run together at most")
    serve.add_argument("--max-wait-ms", type=_number(float, 0.0), default=10.0, help="wait for a batch to fill")
    serve.add_argument("--queue-size", type=POSITIVE, default=64, help="waiting requests; beyond, 503")
    serve.add_argument("--max-request-bytes", type=POSITIVE, default=32 << 20, help="larger bodies get 413")
    serve.add_argument("--max-image-bytes", type=POSITIVE, default=20 << 20)
    serve.add_argument("--max-image-pixels", type=POSITIVE, default=50_000_000)
    serve.add_argument("--allow-remote-images", action="store_true", help="fetch http(s) image URLs")
    serve.add_argument(
        "--allowed-local-media-path", type=EXISTING_FOLDER, help="read image paths under this folder only"
    )
    serve.add_argument("--raw", action="store_true", help="a plain VLM endpoint: no protocol, whole conversations")
    _model_options(serve)
    serve.set_defaults(func=cmd_serve)

    tiny = sub.add_parser("build-tiny", help="build a random-init tiny Qwen2.5-VL with its processor, offline")
    tiny.add_argument("output", type=FOLDER)
    tiny.add_argument("--seed", type=_number(int, 0), default=0)
    tiny.set_defaults(func=cmd_build_tiny)
    return parser


def _end_process_group() -> None:
    """Destroy the process group that a multi-process run (``torchrun``, ``accelerate launch``) set up.
    Left to interpreter exit, gloo's worker threads can abort the process after training has finished
    ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489)."""
    distributed = sys.modules.get("torch.distributed")  # not imported: no group to end
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status: 0, or 2 for a usage or input error (message on stderr)."""
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), its message printed
        return int(exit_.code or 0)
    except AwaresError as err:
        print(f"awares: error: {err}", file=sys.stderr)
        return 2
    finally:
        _end_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

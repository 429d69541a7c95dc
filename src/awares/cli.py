"""The ``awares`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from .crops import CROP_IDS
from .errors import AwaresError, InputError
from .images import load_image
from .runtime import POLICIES, Engine, Result, RuntimeConfig


def _engine(args: argparse.Namespace) -> Engine:
    from .models import HFBackend, default_model_dir

    model_dir = Path(args.model) if args.model else default_model_dir()
    backend = HFBackend.load(model_dir, device=args.device, dtype=args.dtype)
    config = RuntimeConfig(
        max_new_tokens=args.max_new_tokens, low_res_scale=args.low_res_scale, strict_parse=args.strict
    )
    return Engine(backend, config)


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
            f"policy: {result.policy}  parse: {result.parse_status}  crops: {', '.join(result.crops) or '-'}",
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
    result = _engine(args).answer(image, args.question, args.policy, oracle)
    if args.json:
        print(json.dumps({"image": str(args.image), "question": args.question, **result.to_dict()}, indent=2))
    else:
        print(_describe(result))


def demo_image(width: int = 1344, height: int = 896) -> Image.Image:
    """A high-resolution scene: a large shape visible at any resolution, a small label readable only at full."""
    image = Image.new("RGB", (width, height), (235, 235, 225))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 8, height // 6, width // 2, 2 * height // 3), fill=(200, 40, 40))
    draw.text((int(width * 0.78), int(height * 0.85)), "CODE 4271", fill=(0, 0, 0))
    return image


def cmd_demo(args: argparse.Namespace) -> None:
    engine = _engine(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image_path = out / "demo.png"
    demo_image().save(image_path)
    question = "What is the code written in the bottom-right corner?"
    print(f"image: {image_path}  question: {question}")
    for policy in POLICIES:
        result = engine.answer(str(image_path), question, policy, oracle_crops=("3",))
        print(f"\n[{policy}]\n{_describe(result)}")


def cmd_build_tiny(args: argparse.Namespace) -> None:
    from .models import TinyConfig, build_tiny

    print(build_tiny(args.output, TinyConfig(seed=args.seed)))


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="local checkpoint directory (default: the embedded tiny model)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA, float32 on CPU"
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--low-res-scale", type=float, default=0.5, help="side scale of the low-res view")
    parser.add_argument("--strict", action="store_true", help="accept only the exact documented tool-call form")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="awares", description="Resolution-aware VLM inference with high-res crops on demand."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question about an image")
    ask.add_argument("image", help="path to the image")
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
    demo.add_argument("--out", default="runs/demo", help="where the demo image is written")
    _model_options(demo)
    demo.set_defaults(func=cmd_demo)

    tiny = sub.add_parser("build-tiny", help="build a random-init tiny Qwen2.5-VL with its processor, offline")
    tiny.add_argument("output")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_build_tiny)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AwaresError as err:
        print(f"awares: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What several commands share: argparse types that check a value where it is parsed, the model and
runtime options, and the engines they build."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..crops import CROP_IDS
from ..errors import InputError
from ..models.families import supported
from ..models.servers import ENGINE_NAMES
from ..runtime import POLICIES, POLICY_TABLE, Engine, RuntimeConfig


def number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
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


POSITIVE = number(int, 1)
FRACTION = number(float, 0.0, 1.0)  # [0, 1]
SCALE = number(float, 0.0, 1.0, low_open=True)  # (0, 1]
COUNT = number(int, 0)
SEED = COUNT


def folder(text: str) -> str:
    """An argparse type: a folder to write into (made if missing); an existing file is refused."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    return text


def existing_folder(text: str) -> str:
    """An argparse type: a folder that exists."""
    if not Path(text).is_dir():
        state = "is a file" if Path(text).exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {state}; give a folder")
    return text


def existing_file(text: str) -> str:
    """An argparse type: a file that exists (a folder is refused)."""
    if not Path(text).is_file():
        state = "is a folder" if Path(text).exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {state}; give a file")
    return text


def policy_list(text: str) -> list[str]:
    """An argparse type: comma-separated policies, e.g. ``full,crops``."""
    policies = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise argparse.ArgumentTypeError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    return policies


def crop_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated crop ids, e.g. ``0,5``."""
    crops = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in crops if c not in CROP_IDS]
    if unknown or not crops:
        raise argparse.ArgumentTypeError(f"unknown crop ids {unknown}; valid ids are {', '.join(CROP_IDS)}")
    return crops


def shard(text: str) -> tuple[int, int]:
    """An argparse type: ``I/N``, the I-th (0-based) of N shards."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shard {text!r}; use I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"bad shard {text!r}: I must be in 0..N-1")
    return index, count


def add_data_options(parser: argparse.ArgumentParser, default: str | None, help_text: str) -> None:
    parser.add_argument("--data", default=default, help=help_text)
    parser.add_argument(
        "--allow-outside-images", action="store_true", help="accept image paths outside the dataset's folder"
    )
    parser.add_argument("--limit", type=POSITIVE, help="only the first N records")


def _shipped_for(checkpoint: str) -> str:
    return ", ".join(p for p in POLICIES if POLICY_TABLE[p].checkpoint == checkpoint)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and runtime")
    group.add_argument(
        "--model",
        help=f"a local checkpoint folder or a Hugging Face Hub id of {supported()}, e.g. Kimhi/AWARES-Qwen2.5-VL-7B "
        f"(default: the shipped tiny AwaRes policy for {_shipped_for('policy')}, the shipped base VLM for "
        f"{_shipped_for('base')} and curation)",
    )
    group.add_argument(
        "--baseline-model",
        help=f"the checkpoint for {_shipped_for('base')} when --model is a trained policy (default: --model)",
    )
    group.add_argument("--revision", help="with a hub id: a branch, tag or commit (default: main)")
    group.add_argument(
        "--backend", choices=["hf", "openai"], default="hf", help="hf: in process; openai: a VLM server (--url)"
    )
    group.add_argument("--url", help="openai backend: the server's base URL, e.g. http://localhost:8000/v1")
    group.add_argument("--served-model", help="openai backend: the model name on that server")
    group.add_argument("--processor", help="openai backend: a folder or hub id with the model's processor")
    group.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    group.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="default: bfloat16 on CUDA, float32 on CPU"
    )
    group.add_argument("--max-new-tokens", type=number(int, 1, 4096), default=32)
    group.add_argument("--low-res-scale", type=SCALE, default=0.5, help="side scale of the low-res view (0.5)")
    group.add_argument("--max-question-tokens", type=POSITIVE, default=1024, help="longer questions are refused")
    group.add_argument("--strict", action="store_true", help="accept only the exact documented tool-call form")
    group.add_argument(
        "--max-rtr",
        type=SCALE,
        help="crops policy: at most this share of the full image's visual tokens (view included); the crops "
        "that would pass it are masked while the call is decoded",
    )
    group.add_argument("--max-crops", type=COUNT, help="crops policy: at most this many crops per call")
    group.add_argument(
        "--no-jump-forward",
        action="store_true",
        help="hf backend: decode a tool call token by token instead of appending its fixed syntax in one pass",
    )
    group.add_argument(
        "--guided-calls",
        action="store_true",
        help="openai backend: constrain turns to a call or an answer, in the form the server's engine enforces "
        "(vLLM structured outputs, SGLang regex, llama.cpp GBNF grammar); an engine that cannot is an error",
    )
    group.add_argument(
        "--engine",
        choices=["auto", *ENGINE_NAMES],
        default="auto",
        help="openai backend: the server's engine (auto: asked from the server when --guided-calls needs it)",
    )


def model_source(args: argparse.Namespace, policy: str) -> str | Path:
    """``--baseline-model`` for a policy that runs the base VLM, else ``--model``, else the embedded
    default for ``policy``: the shipped AwaRes policy for ``crops``, the shipped base VLM for the baselines."""
    from ..models import default_model_dir

    if args.baseline_model and POLICY_TABLE[policy].checkpoint == "base":
        return args.baseline_model
    return args.model or default_model_dir(policy)


def engine(args: argparse.Namespace, policy: str) -> Engine:
    """The engine of ``policy``'s model, from the model and runtime options."""
    from ..models import HFBackend, OpenAIBackend

    source = model_source(args, policy)
    if args.backend == "openai":
        if not (args.url and args.served_model):
            raise InputError("--backend openai needs --url and --served-model")
        backend = OpenAIBackend.connect(
            args.url,
            args.served_model,
            args.processor or source,
            args.revision,
            guided_calls=args.guided_calls,
            engine=args.engine,
        )
    else:
        backend = HFBackend.load(
            source, args.device, args.dtype, jump_forward=not args.no_jump_forward, revision=args.revision
        )
    config = RuntimeConfig(
        max_new_tokens=args.max_new_tokens,
        low_res_scale=args.low_res_scale,
        strict_parse=args.strict,
        max_question_tokens=args.max_question_tokens,
        max_rtr=args.max_rtr,
        max_crops=args.max_crops,
    )
    return Engine(backend, config)


def engines(args: argparse.Namespace, policies: Sequence[str]) -> dict[str, Engine]:
    """An engine per policy; policies on the same model share one (the model loads once)."""
    by_source: dict[str, Engine] = {}
    for policy in policies:
        key = str(model_source(args, policy))
        if key not in by_source:
            by_source[key] = engine(args, policy)
    return {policy: by_source[str(model_source(args, policy))] for policy in policies}


def add_config_flags(parser: argparse.ArgumentParser, cls: type, given: dict[str, Any]) -> None:
    """A ``--field-name`` flag for each scalar field of the config dataclass ``cls`` that ``given``
    does not already define (as TRL's and vLLM's parsers do): its type, its choices where it has
    some, ``--flag/--no-flag`` for a bool, the default shown; an unset flag leaves the TOML's value."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} (override the TOML's values)")
    for field in dataclasses.fields(cls):
        kind, flag = hints[field.name], "--" + field.name.replace("_", "-")
        if field.name in given or field.default is dataclasses.MISSING:
            continue
        shown = f"default: {field.default!r}"
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=shown)
        elif typing.get_origin(kind) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(kind), default=None, help=shown)
        elif kind in (int, float, str):
            group.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(), help=shown)


def config_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` the command line sets (0 and false included)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}

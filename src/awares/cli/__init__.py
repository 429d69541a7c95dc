"""The ``awares`` command line: each command's options and handler in ``commands``, what they share
in ``options``; ``main`` parses, runs one command and turns user errors into exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import AwaresError
from .commands import COMMANDS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="awares", description="Resolution-aware VLM inference with high-res crops on demand."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
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

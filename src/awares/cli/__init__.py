"""The ``awares`` command line: each command's options and handler in ``commands``, what they share
in ``options``; ``main`` parses, runs one command and turns user errors into exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence

from ..errors import AwaresError
from .commands import COMMANDS

__all__ = ["build_parser", "main"]


class _ShowDefaults(argparse.HelpFormatter):
    """Help that ends each option's text with its default, where it has one and does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="awares", description="Resolution-aware VLM inference with high-res crops on demand.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    _help_everywhere(parser)
    return parser


def _help_everywhere(parser: argparse.ArgumentParser) -> None:
    """Give every option with a default a help entry, so that the default shows where it has no text."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _help_everywhere(child)
        elif action.help is None and action.default not in (None, False, argparse.SUPPRESS):
            action.help = "default: %(default)s"


def _end_process_group(code: int, patience_s: float = 60.0) -> None:
    """Destroy the process group that a multi-process run (``torchrun``, ``accelerate launch``) set up.
    Left to interpreter exit, gloo's worker threads can abort the process after training has finished
    ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489). The destroy
    itself now and then never returns on one rank after the other has gone (pytorch/pytorch#75097):
    everything is saved by then, so after ``patience_s`` the process leaves with ``code``."""
    distributed = sys.modules.get("torch.distributed")  # not imported: no group to end
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return
    watchdog = threading.Timer(patience_s, _leave, (code, patience_s))
    watchdog.daemon = True
    watchdog.start()
    distributed.destroy_process_group()
    watchdog.cancel()


def _leave(code: int, patience_s: float) -> None:
    print(f"awares: the process group did not end within {patience_s:.0f} s; leaving without it", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status: 0, or 2 for a usage or input error (message on stderr)."""
    code = 0
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), its message printed
        code = int(exit_.code or 0)
    except AwaresError as err:
        print(f"awares: error: {err}", file=sys.stderr)
        code = 2
    except BaseException:
        code = 1
        raise
    finally:
        _end_process_group(code)
    return code

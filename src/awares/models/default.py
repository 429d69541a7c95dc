"""The embedded default model: a tiny Qwen2.5-VL built offline on first use."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .tiny import TinyConfig, build_tiny


def cache_dir() -> Path:
    """Where awares keeps models it builds (``$AWARES_HOME``, default ``~/.cache/awares``)."""
    return Path(os.environ.get("AWARES_HOME", Path.home() / ".cache" / "awares"))


def default_model_dir() -> Path:
    """Directory of the default model, building the random-init tiny model there if it is absent.

    The build goes to a temporary directory first and is renamed into place, so an interrupted or
    concurrent build never leaves a half-written model behind.
    """
    target = cache_dir() / "tiny-random"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tiny-", dir=target.parent))
    build_tiny(staging, TinyConfig())
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target

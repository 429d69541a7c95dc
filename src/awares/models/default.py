"""The embedded default model: the checkpoint shipped in the package, else a tiny one built offline."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .tiny import TinyConfig, build_tiny

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def cache_dir() -> Path:
    """Where awares keeps what it builds or generates (``$AWARES_HOME``, default ``~/.cache/awares``)."""
    return Path(os.environ.get("AWARES_HOME", Path.home() / ".cache" / "awares"))


def random_tiny_dir() -> Path:
    """A random-init tiny model, built once into the cache.

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


def _shipped(name: str) -> Path:
    path = ASSETS / name
    return path if (path / "model.safetensors").is_file() else random_tiny_dir()


def default_base_dir() -> Path:
    """The shipped base VLM (trained on the synthetic benchmark): what curation and SFT start from."""
    return _shipped("base")


def default_model_dir(policy: str = "crops") -> Path:
    """The embedded default for a runtime policy (``runtime.POLICY_TABLE``'s ``checkpoint``): the
    shipped AwaRes policy (SFT + GRPO from the base), or the base VLM for the others. The random
    tiny model where a checkpoint is absent."""
    from ..runtime.policies import POLICY_TABLE  # the runtime imports models: looked up when called

    return _shipped("awares" if POLICY_TABLE[policy].checkpoint == "policy" else "base")

"""Names and paths that come from users: plain file names, and paths confined to a folder."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InputError

# Letters, digits, '.', '_', '-' and '+', not starting with '.', at most 200 characters: safe as a file
# name on every system, never a path, never hidden.
_PLAIN = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]{0,199}")


def plain_name(text: str, what: str = "name") -> str:
    """``text`` if it is a plain file name (see ``_PLAIN``), else an ``InputError`` naming ``what``."""
    if not isinstance(text, str) or not _PLAIN.fullmatch(text):
        raise InputError(
            f"{what} {str(text)[:80]!r} is not a plain name: use letters, digits, '.', '_', '-' or '+' "
            "(no '/', not starting with '.', at most 200 characters)"
        )
    return text


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves (links followed) to a place under ``folder``."""
    return path.resolve().is_relative_to(folder.resolve())

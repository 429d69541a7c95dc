"""Parse a model turn into a final answer, a crop request, or a typed parse error (never raises)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..crops import ALL, CROP_NAMES

_CALL = re.compile(r"get[\s_-]?crops?\s*:?", re.IGNORECASE)
_STRICT = re.compile(r"GET_CROPS: \[('(?:[0-8]|all)'(?:, '(?:[0-8]|all)')*)\]")

_ALIASES: dict[str, str] = {cid: cid for cid in CROP_NAMES}
_ALIASES.update({name: cid for cid, name in CROP_NAMES.items()})
_ALIASES.update({f"{CROP_NAMES[cid]}-half": cid for cid in "5678"})
_ALIASES.update({"centre": "4", "middle": "4", ALL: ALL, "whole": ALL, "full": ALL, "whole-image": ALL})


@dataclass(frozen=True)
class Answer:
    """The turn is a final answer."""

    text: str


@dataclass(frozen=True)
class CropCall:
    """The turn requests crops; ``dropped`` lists unknown items the lenient parser ignored."""

    crop_ids: tuple[str, ...]
    dropped: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParseError:
    """The turn tries to call the tool but the call cannot be understood."""

    message: str
    text: str


Parsed = Answer | CropCall | ParseError


def _normalise(item: str) -> str:
    item = item.strip().strip("'\"`").strip().lower()
    return re.sub(r"[\s_]+", "-", item)


def _items(body: str) -> tuple[list[str], list[str]]:
    """Split a call body into known crop ids and unknown items."""
    known: list[str] = []
    unknown: list[str] = []
    for piece in filter(None, (p.strip() for p in body.split(","))):
        if (cid := _ALIASES.get(_normalise(piece))) is not None:
            known.append(cid)
            continue
        words = [_normalise(w) for w in piece.split()]
        if words and all(w in _ALIASES for w in words):
            known.extend(_ALIASES[w] for w in words)
        else:
            unknown.append(piece)
    return known, unknown


def _canonical(crop_ids: list[str]) -> tuple[str, ...]:
    """Drop duplicates (keeping order); ``all`` swallows every other crop."""
    unique = tuple(dict.fromkeys(crop_ids))
    return (ALL,) if ALL in unique else unique


def parse_strict(text: str) -> Parsed:
    """The documented form only: ``GET_CROPS: ['0', '5']`` (quoted ids, no duplicates) as the whole turn."""
    stripped = text.strip()
    if not _CALL.search(stripped):
        return Answer(stripped)
    match = _STRICT.fullmatch(stripped)
    if match is None:
        return ParseError("not of the form GET_CROPS: ['id', ...]", text)
    ids = [item.strip("'") for item in match.group(1).split(", ")]
    if len(set(ids)) != len(ids) or (ALL in ids and len(ids) > 1):
        return ParseError("duplicate ids, or 'all' combined with other crops", text)
    return CropCall(tuple(ids))


def parse_lenient(text: str) -> Parsed:
    """Accept any recognisable call: quotes or not, spaces, names or ids, duplicates, text around it."""
    match = _CALL.search(text)
    if match is None:
        return Answer(text.strip())
    rest = text[match.end() :]
    if (opened := rest.find("[")) != -1 and not rest[:opened].strip():
        closed = rest.find("]", opened)
        body = rest[opened + 1 : closed if closed != -1 else len(rest)]
    else:
        body = rest.strip().splitlines()[0] if rest.strip() else ""
    known, unknown = _items(body)
    if not known:
        reason = f"unknown crop ids {unknown}" if unknown else "no crop ids"
        return ParseError(f"{reason}; valid ids are {list(_ALIASES)[:10]}", text)
    return CropCall(_canonical(known), tuple(unknown))


def may_become_call(text: str) -> bool:
    """Whether a turn that begins with ``text`` may still turn out to be a tool call: it holds a call
    already, or it is so far the beginning of one (``GET``, ``get crop`` ...)."""
    if _CALL.search(text):
        return True
    start = text.lstrip().lower()
    return any(form.startswith(start) for form in ("get_crops", "get crops", "get-crops", "getcrops"))


def parse_response(text: str, strict: bool = False) -> Parsed:
    """Parse one model turn with the strict or the lenient grammar."""
    return parse_strict(text) if strict else parse_lenient(text)

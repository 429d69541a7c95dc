"""The policies the engine runs, with every fact a caller needs about one: one table, read by the
engine, the default checkpoints, evaluation, the command line and the server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Policy = Literal["full", "low", "crops", "oracle", "attention"]


@dataclass(frozen=True)
class PolicyFacts:
    """What a policy sees and needs.

    ``view``: the image turn 1 shows (the full image or the low-res view). ``checkpoint``: the
    shipped model it runs by default (the trained AwaRes policy, or the base VLM it was trained
    from). ``oracle_crops``: it is given the crops that cover the evidence. ``attention``: it reads
    the model's attention (in-process backend only). ``served``: ``awares serve`` offers it.
    """

    name: Policy
    summary: str
    view: Literal["full", "low"] = "low"
    checkpoint: Literal["policy", "base"] = "base"
    oracle_crops: bool = False
    attention: bool = False
    served: bool = True


POLICY_TABLE: dict[str, PolicyFacts] = {
    p.name: p
    for p in (
        PolicyFacts("full", "one pass on the full image", view="full"),
        PolicyFacts("low", "one pass on the low-res view"),
        PolicyFacts("crops", "AwaRes: the low-res view, then the crops the model asks for", checkpoint="policy"),
        PolicyFacts("oracle", "the low-res view and the given crops (--crops)", oracle_crops=True, served=False),
        PolicyFacts("attention", "training-free: crops where the model's attention looks", attention=True),
    )
}
POLICIES: tuple[str, ...] = tuple(POLICY_TABLE)
SERVED_POLICIES: tuple[str, ...] = tuple(p for p in POLICIES if POLICY_TABLE[p].served)


def policy_help() -> str:
    """One line per policy, for help texts."""
    return "; ".join(f"{p.name}: {p.summary}" for p in POLICY_TABLE.values())

"""Automatic supervision: judge labels, oracle boxes, crop targets and multi-turn trajectories."""

from .judge import Judge, JudgeError, LLMJudge, RuleJudge, label, make_judge, parse_verdict
from .oracle import (
    AttentionOracle,
    GroundTruthOracle,
    OCROracle,
    Oracle,
    OracleError,
    VLMOracle,
    make_oracle,
    parse_box,
)
from .pipeline import CurateConfig, curate, finalize, shard_of
from .trajectories import ImageStore, trajectory

__all__ = [
    "AttentionOracle",
    "CurateConfig",
    "GroundTruthOracle",
    "ImageStore",
    "Judge",
    "JudgeError",
    "LLMJudge",
    "OCROracle",
    "Oracle",
    "OracleError",
    "RuleJudge",
    "VLMOracle",
    "curate",
    "finalize",
    "label",
    "make_judge",
    "make_oracle",
    "parse_box",
    "parse_verdict",
    "shard_of",
    "trajectory",
]

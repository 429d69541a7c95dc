"""The runtime: the two-turn engine (``engine``), the policies it runs (``policies``) and the
training-free attention policy (``attention``)."""

from .attention import AttentionConfig, attention_box, where
from .engine import AnswerStream, Engine, Request, Result, RuntimeConfig, VisualTokens
from .policies import POLICIES, POLICY_TABLE, SERVED_POLICIES, Policy, policy_help

__all__ = [
    "POLICIES",
    "POLICY_TABLE",
    "SERVED_POLICIES",
    "AnswerStream",
    "AttentionConfig",
    "Engine",
    "Policy",
    "Request",
    "Result",
    "RuntimeConfig",
    "VisualTokens",
    "attention_box",
    "policy_help",
    "where",
]

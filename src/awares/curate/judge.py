"""Judges: is an answer correct? They label each sample `direct`, `crop` or `unsolvable`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol

from ..errors import AwaresError, InputError
from ..evaluate.metrics import anls, exact_match, normalize
from ..models.endpoint import ChatEndpoint

Label = Literal["direct", "crop", "unsolvable"]
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class JudgeError(AwaresError):
    """A judge could not give a verdict (endpoint down, reply not a verdict)."""


class Judge(Protocol):
    def __call__(self, question: str, prediction: str, answers: list[str]) -> bool: ...


@dataclass
class RuleJudge:
    """Normalised exact match; optionally ANLS at a threshold (text) and a relative numeric tolerance."""

    anls_threshold: float | None = None
    numeric_tolerance: float = 0.0

    def __call__(self, question: str, prediction: str, answers: list[str]) -> bool:
        if exact_match(prediction, answers):
            return True
        if self.anls_threshold is not None and anls(prediction, answers) >= self.anls_threshold:
            return True
        pred = normalize(prediction).replace(",", "")
        if self.numeric_tolerance and _NUMBER.match(pred):
            for answer in answers:
                gold = normalize(answer).replace(",", "")
                if _NUMBER.match(gold) and abs(float(pred) - float(gold)) <= self.numeric_tolerance * abs(float(gold)):
                    return True
        return False


def default_template() -> str:
    return resources.files(__package__).joinpath("judge_prompt.txt").read_text()


def parse_verdict(reply: str) -> bool:
    """Strict: the reply must be the single word ``correct`` or ``incorrect`` (case, spaces, a full stop aside)."""
    word = reply.strip().rstrip(".").strip().lower()
    if word not in ("correct", "incorrect"):
        raise JudgeError(f"judge reply is not a verdict: {reply[:80]!r}")
    return word == "correct"


@dataclass
class LLMJudge:
    """An LLM behind an OpenAI-compatible endpoint grades the answer with a prompt template.

    The template's ``{question}``, ``{answers}`` (joined by `` | ``) and ``{prediction}`` are filled in;
    other braces are left alone.
    """

    endpoint: ChatEndpoint
    template: str = ""

    @classmethod
    def from_args(cls, base_url: str, model: str, template_file: str | Path | None = None, **endpoint: object):
        template = Path(template_file).read_text() if template_file else default_template()
        for key in ("{question}", "{answers}", "{prediction}"):
            if key not in template:
                raise JudgeError(f"judge template lacks {key}")
        return cls(ChatEndpoint(base_url, model, max_tokens=8, **endpoint), template)

    def __call__(self, question: str, prediction: str, answers: list[str]) -> bool:
        template = self.template or default_template()
        fields = {"{question}": question, "{answers}": " | ".join(answers), "{prediction}": prediction}
        prompt = re.sub("|".join(map(re.escape, fields)), lambda m: fields[m.group()], template)
        return parse_verdict(self.endpoint.complete(prompt))


def label(judge: Judge, question: str, answers: list[str], low: str, full: str) -> Label:
    """``direct`` when the low-res answer is correct, ``crop`` when only the full-res one is."""
    if judge(question, low, answers):
        return "direct"
    return "crop" if judge(question, full, answers) else "unsolvable"


def make_judge(
    kind: Literal["rule", "llm"] = "rule",
    anls_threshold: float | None = None,
    numeric_tolerance: float = 0.0,
    url: str | None = None,
    model: str | None = None,
    template: str | Path | None = None,
) -> Judge:
    """The judge ``awares curate --judge`` names: rule-based, or an LLM on an OpenAI-compatible server."""
    if kind == "rule":
        return RuleJudge(anls_threshold=anls_threshold, numeric_tolerance=numeric_tolerance)
    if not (url and model):
        raise InputError("--judge llm needs --judge-url and --judge-model")
    return LLMJudge.from_args(url, model, template)

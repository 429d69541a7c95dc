"""Answer metrics: normalised exact match and ANLS."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 when the normalised prediction equals any normalised answer."""
    pred = normalize(prediction)
    return float(any(pred == normalize(a) for a in answers))


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """Average normalised Levenshtein similarity (DocVQA): best over answers, 0 below ``threshold``."""
    pred = " ".join(prediction.lower().split())
    best = 0.0
    for answer in answers:
        gold = " ".join(answer.lower().split())
        length = max(len(pred), len(gold))
        similarity = 1.0 - levenshtein(pred, gold) / length if length else 1.0
        best = max(best, similarity if similarity >= threshold else 0.0)
    return best

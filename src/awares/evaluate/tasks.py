"""The official metric of each Table-1 benchmark, as lmms-eval computes it.

``score(task, prediction, answers, kind)`` is one sample's score in [0, 1] (the harness stores it as
``correct``); ``task_metrics(task, rows)`` aggregates a result file's rows into the benchmark's
reported numbers, the first being the one Table 1 shows.
"""

from __future__ import annotations

import re
import string
from typing import Any

from .metrics import anls

HME = "Handwritten Mathematical Expression Recognition"  # OCRBench's HME100k category


def _number(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = 0.05) -> bool:
    """ChartQA: within 5% of a numeric target (percentages as fractions), else case-insensitive equality."""
    pred, gold = _number(prediction), _number(target)
    if pred is not None and gold:
        return abs(pred - gold) / abs(gold) <= max_relative_change
    return prediction.lower() == target.lower()


def ocrbench_score(prediction: str, answers: list[str], kind: str | None) -> float:
    """OCRBench: an answer contained in the prediction (lowercased); for handwritten formulas, with
    all spaces and newlines removed and case kept."""
    pred = prediction.lower().strip()
    if kind == HME:
        squeeze = lambda t: t.strip().replace("\n", " ").replace(" ", "")  # noqa: E731
        return float(any(squeeze(a) in squeeze(pred) for a in answers))
    return float(any(a.lower().strip().replace("\n", " ") in pred.replace("\n", " ") for a in answers))


def _choices(question: str) -> dict[str, str]:
    """Option text -> letter, from "A. text" lines (RealWorldQA and V* questions)."""
    return {text.strip(): letter for letter, text in re.findall(r"\b([A-Z])\.\s+([^\n]*)", question)}


def realworldqa_letter(prediction: str, question: str) -> str:
    """lmms-eval's multiple-choice filter: the letter of an option whose text the reply contains,
    else the reply without punctuation."""
    cleaned = re.sub(r"[^\w\s]", "", prediction).strip()
    for text, letter in _choices(question).items():
        if text and text in cleaned:
            return letter
    return cleaned


def vstar_letter(prediction: str) -> str | None:
    """The option letter a V* reply names: "A", "(A)", "A.", "Answer: A", a lone letter."""
    reply = prediction.strip().upper()
    for pattern in (
        r"^([A-D])\s*[\.)\]]*",
        r"(?:THE\s+)?(?:ANSWER|CHOICE|OPTION)(?:\s+IS)?[\s:]+([A-D])",
        r"\(([A-D])\)",
        r"([A-D])\s*(?:\.|\)|])",
        r"(?:^|\s)([A-D])(?:\s|$)",
    ):
        if match := re.search(pattern, reply):
            return match.group(1)
    letters = re.findall(r"[A-D]", reply)
    return letters[0] if len(letters) == 1 else None


def score(task: str, prediction: str, answers: list[str], kind: str | None = None, question: str = "") -> float:
    """One sample's score under ``task``'s official metric."""
    if task == "chartqa":
        return float(any(relaxed_correctness(prediction, a) for a in answers))
    if task == "docvqa":
        return anls(prediction, answers)
    if task == "ocrbench":
        return ocrbench_score(prediction, answers, kind)
    if task == "pope":
        return float(prediction.lower().strip() == answers[0])
    if task == "realworldqa":
        strip = str.maketrans("", "", string.punctuation)
        letter = realworldqa_letter(prediction, question).lower().translate(strip).strip()
        return float(letter == answers[0].lower().translate(strip).strip())
    if task == "vstar":
        return float(vstar_letter(prediction) == answers[0])
    raise ValueError(f"unknown task {task!r}")


def pope_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """POPE's accuracy, precision, recall and F1 of "yes", and the share of "yes" in the ground truth."""
    pairs = [(r["answer"].lower().strip(), r["answers"][0]) for r in rows]
    tp = sum(p == "yes" and g == "yes" for p, g in pairs)
    fp = sum(p == "yes" and g == "no" for p, g in pairs)
    fn = sum(p == "no" and g == "yes" for p, g in pairs)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100 * sum(p == g for p, g in pairs) / len(pairs),
        "f1": 100 * f1,
        "precision": 100 * precision,
        "recall": 100 * recall,
        "yes_ratio": sum(g == "yes" for _, g in pairs) / len(pairs),
    }


METRIC_NAMES = {
    "chartqa": "relaxed accuracy",
    "docvqa": "ANLS",
    "ocrbench": "accuracy",
    "pope": "accuracy",
    "realworldqa": "accuracy",
    "vstar": "accuracy",
}


def task_metrics(task: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The benchmark's reported numbers over result rows (each with ``correct``, ``answer``,
    ``answers``); the first is Table 1's: ChartQA relaxed accuracy, DocVQA ANLS, OCRBench accuracy
    (lmms-eval's final score over 1,000 questions, as a percentage), POPE accuracy (with F1,
    precision, recall, yes ratio), RealWorldQA and V* accuracy."""
    if task == "pope":
        return pope_metrics(rows)
    return {METRIC_NAMES[task]: 100 * sum(r["correct"] for r in rows) / len(rows)}

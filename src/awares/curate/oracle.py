"""Oracle grounding: where in the image is the evidence for the answer? Each oracle returns pixel boxes."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from ..crops import Box
from ..data import Record
from ..errors import AwaresError, InputError
from ..evaluate.metrics import normalize
from ..runtime.attention import where


class OracleError(AwaresError):
    """The oracle found no box for the evidence."""


class Oracle(Protocol):
    def __call__(self, record: Record, image: Image.Image, answer: str) -> list[Box]: ...


class GroundTruthOracle:
    """The dataset's own evidence boxes (the synthetic benchmark has them)."""

    def __call__(self, record: Record, image: Image.Image, answer: str) -> list[Box]:
        if not record.evidence:
            raise OracleError(f"{record.id}: the record has no evidence boxes")
        return record.evidence_boxes()


def _quad_box(quads: list[Any]) -> Box:
    points = np.asarray(quads, dtype=float).reshape(-1, 2)
    (x0, y0), (x1, y1) = np.floor(points.min(axis=0)), np.ceil(points.max(axis=0))
    return Box(int(x0), int(y0), int(x1), int(y1))


@dataclass
class OCROracle:
    """Finds the answer among the words an OCR engine reads (RapidOCR: PP-OCR models shipped in the
    wheel, ONNX Runtime on CPU) and returns the box of the best-matching run of words.

    The best contiguous run of words of one line whose normalised text is most similar to the
    normalised answer (difflib ratio) wins if it reaches ``min_similarity``.
    """

    min_similarity: float = 0.8
    _engine: Any = field(default=None, init=False, repr=False)

    def words(self, image: Image.Image) -> list[list[tuple[str, Box]]]:
        """The recognised lines, each a list of (word, box)."""
        if self._engine is None:
            from rapidocr import RapidOCR

            self._engine = RapidOCR(params={"Global.log_level": "error"})
        result = self._engine(np.asarray(image.convert("RGB")), return_word_box=True)
        if result.boxes is None:  # nothing detected (word_results then holds a placeholder)
            return []
        return [[(text, _quad_box(quad)) for text, _, quad in line] for line in result.word_results]

    def __call__(self, record: Record, image: Image.Image, answer: str) -> list[Box]:
        target = normalize(answer)
        best, best_box = 0.0, None
        for line in self.words(image):
            for i in range(len(line)):
                for j in range(i + 1, len(line) + 1):
                    text = normalize(" ".join(w for w, _ in line[i:j]))
                    score = difflib.SequenceMatcher(None, text, target).ratio()
                    if score > best:
                        best, best_box = score, _union([b for _, b in line[i:j]])
        if best_box is None or best < self.min_similarity:
            raise OracleError(f"{record.id}: OCR found no text like {answer!r} (best similarity {best:.2f})")
        return [best_box]


def _union(boxes: list[Box]) -> Box:
    return Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes), max(b.x1 for b in boxes), max(b.y1 for b in boxes))


Coords = Literal["norm1000", "unit", "pixels"]
_NUMBERS = re.compile(r"-?\d+(?:\.\d+)?")


def parse_box(reply: str, size: tuple[int, int], coords: Coords = "norm1000") -> list[Box]:
    """Pixel boxes from a grounding model's reply: JSON (``{"bbox_2d": [...]}``, ``{"answer": [...]}``,
    a list of those or bare 4-number lists, inside a code fence or not) or, failing that, the first
    four numbers. ``coords`` says what the numbers are: 0-1000 (Qwen2-VL, the AwaRes oracle), 0-1, or
    pixels of the image. Raises ``OracleError`` when no valid box is found."""
    width, height = size
    scale = {"norm1000": (width / 1000, height / 1000), "unit": (width, height), "pixels": (1.0, 1.0)}[coords]
    candidates = []
    text = reply.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        candidates = list(_quads(json.loads(text)))
    except json.JSONDecodeError:
        numbers = [float(v) for v in _NUMBERS.findall(reply)]
        if len(numbers) >= 4:
            candidates = [numbers[:4]]
    boxes = []
    for x0, y0, x1, y1 in candidates:
        x0, x1 = sorted(min(max(v * scale[0], 0), width) for v in (x0, x1))
        y0, y1 = sorted(min(max(v * scale[1], 0), height) for v in (y0, y1))
        x0, y0, x1, y1 = int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))
        if x1 > x0 and y1 > y0:  # degenerate or entirely outside: not a box
            boxes.append(Box(x0, y0, x1, y1))
    if not boxes:
        raise OracleError(f"no box in the grounding reply {reply[:80]!r}")
    return boxes


def _quads(value: Any):
    """Every 4-number list in a parsed JSON value, preferring an ``answer`` entry over the rest."""
    if isinstance(value, dict):
        if "answer" in value:
            value = value["answer"]
        else:
            value = list(value.values())
    if isinstance(value, list):
        if len(value) == 4 and all(isinstance(v, int | float) for v in value):
            yield [float(v) for v in value]
        else:
            for item in value:
                yield from _quads(item)


DEFAULT_GROUNDING_PROMPT = (
    "Question: {question}\nAnswer: {answer}\nGive the bounding box of the image region that shows the answer, "
    'as JSON {{"bbox_2d": [x1, y1, x2, y2]}} with coordinates from 0 to 1000.'
)


@dataclass
class VLMOracle:
    """A grounding-capable VLM is asked for the evidence box; ``ask(image, prompt) -> reply`` is any
    backend (``ChatEndpoint.complete`` or a local model)."""

    ask: Callable[[Image.Image, str], str]
    prompt: str = DEFAULT_GROUNDING_PROMPT
    coords: Coords = "norm1000"

    def __call__(self, record: Record, image: Image.Image, answer: str) -> list[Box]:
        reply = self.ask(image, self.prompt.format(question=record.question, answer=answer))
        try:
            return parse_box(reply, image.size, self.coords)
        except OracleError as err:
            raise OracleError(f"{record.id}: {err}") from err


@dataclass
class AttentionOracle:
    """The curated model's own attention at full resolution, where it answers correctly
    (``runtime.where``): no grounding model and no boxes in the data."""

    engine: Any

    def __call__(self, record: Record, image: Image.Image, answer: str) -> list[Box]:
        return [where(self.engine, image, record.question)]


def make_oracle(
    kind: Literal["gt", "ocr", "vlm", "attention"] = "gt",
    url: str | None = None,
    model: str | None = None,
    engine: Any = None,
) -> Oracle:
    """The oracle ``awares curate --oracle`` names: the dataset's boxes, OCR, a grounding VLM on an
    OpenAI-compatible server, or ``engine``'s own attention."""
    if kind == "ocr":
        return OCROracle()
    if kind == "gt":
        return GroundTruthOracle()
    if kind == "attention":
        return AttentionOracle(engine)
    if not (url and model):
        raise InputError("--oracle vlm needs --oracle-url and --oracle-model")
    from ..models.endpoint import ChatEndpoint

    endpoint = ChatEndpoint(url, model)
    return VLMOracle(lambda image, prompt: endpoint.complete(prompt, [image]))

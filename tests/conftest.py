"""Shared fixtures: one tiny random Qwen2.5-VL built offline per test session.

``AWARES_TEST_DEVICE=cuda`` runs the backend tests on the GPU (float32, so exact comparisons hold):
``scripts/gpu_check.sh`` does.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from awares.models import HFBackend, TinyConfig, build_tiny


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), TinyConfig(max_pixels=400 * 28 * 28))


@pytest.fixture(scope="session")
def backend(tiny_dir: Path) -> HFBackend:
    return HFBackend.load(tiny_dir, device=os.environ.get("AWARES_TEST_DEVICE", "cpu"), dtype="float32")


def scene(width: int = 448, height: int = 336, seed: int = 0) -> Image.Image:
    """A small test picture with a large shape and a small label."""
    image = Image.new("RGB", (width, height), (230 - 20 * seed % 200, 230, 220))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 8, height // 8, width // 2, height // 2), fill=(200, 30, 30))
    draw.text((int(width * 0.7), int(height * 0.8)), f"A{seed}7", fill=(0, 0, 0))
    return image


class Scripted:
    """The real backend, with turn-1 texts (and optionally turn-2 texts) replaced as a trained policy
    would write them."""

    def __init__(self, backend, texts, turn2=None):
        self.backend, self.processor, self.texts, self.turn2 = backend, backend.processor, list(texts), turn2

    def generate(self, conversations, **kwargs):
        turn = self.backend.generate(conversations, **kwargs)
        turn.texts = self.texts[: len(conversations)]
        return turn

    def extend(self, *args, **kwargs):
        turn = self.backend.extend(*args, **kwargs)
        if self.turn2 is not None:
            turn.texts = self.turn2[: len(turn.texts)]
        return turn

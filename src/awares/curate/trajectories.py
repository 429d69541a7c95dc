"""Multi-turn tool-use trajectories as chat messages with images written once to disk (content-hashed)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from PIL import Image

from ..protocol import SYSTEM_PROMPT, format_call, turn1_messages, turn2_messages


class ImageStore:
    """Writes each distinct image once, as ``images/<hash>.png`` under ``root``; returns relative paths.

    The name hashes the pixels (not the PNG bytes) and the file appears atomically, so a killed run
    never leaves a half-written image behind a path."""

    def __init__(self, root: Path):
        self.root = root
        (root / "images").mkdir(parents=True, exist_ok=True)

    def put(self, image: Image.Image) -> str:
        image = image.convert("RGB")
        digest = hashlib.sha1(f"{image.size}".encode() + image.tobytes()).hexdigest()[:20]
        relative = f"images/{digest}.png"
        path = self.root / relative
        if not path.is_file():
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            image.save(partial, format="PNG")
            os.replace(partial, path)
        return relative


def trajectory(
    store: ImageStore,
    low_res: Image.Image,
    question: str,
    answer: str,
    crops: list[Image.Image] | None = None,
    crop_ids: tuple[str, ...] = (),
    system_prompt: str = SYSTEM_PROMPT,
) -> dict[str, Any]:
    """``messages`` (HF/TRL conversational format; image parts hold the path) and ``images`` in order.

    Without crops: system, user(low-res image + question), assistant(answer). With crops: ...,
    assistant(``GET_CROPS: [...]``), user(crop images), assistant(answer).
    """
    images = [store.put(low_res)]
    messages = turn1_messages(images[0], question, system_prompt)
    if crops:
        paths = [store.put(c) for c in crops]
        images += paths
        messages = turn2_messages(messages, format_call(crop_ids), paths)
    messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return {"messages": messages, "images": images}

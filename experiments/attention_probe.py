"""Does a base model's attention find the evidence at low resolution? Per layer, as ViCrop reads it.

    python experiments/attention_probe.py [--model src/awares/assets/base] [--data synthetic:val:400]

For each detail question of ``--data``, the low-res view and the question are prefilled and the
attention of the last prompt token (the one that predicts the answer) over the view's visual tokens
is read at every layer (``LastTokenAttention``). ViCrop's *relative* attention divides it by the
attention of a generic prompt ("Write a general description of the image.") on the same view. A
layer localises when its most attended token lies on the evidence box (the plate); chance is the
box's share of the view's tokens. ``crop_share S_margin M``: how often the crops covering the
attention region (``awares.runtime.attention_box`` with that share and margin) cover the evidence.
Prints (and writes to ``--out``) JSON per layer.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from awares.crops import boxes_to_crops, covers_evidence, low_res_view
from awares.data import resolve
from awares.images import load_image
from awares.models import HFBackend, default_model_dir
from awares.models.attention import LastTokenAttention
from awares.protocol import turn1_messages
from awares.runtime import attention_box

GENERIC = "Write a general description of the image."
SHARES, MARGINS = (0.5, 0.2), (0.0, 0.5, 1.0)


def attention(backend: HFBackend, view, question: str, layers: int) -> dict[int, torch.Tensor]:
    """Per layer, the last prompt token's attention over the view's visual tokens (grid order)."""
    inputs = backend._encode([backend._prompt(turn1_messages(view, question))], [view])
    maps = {}
    for layer in range(layers):
        with torch.inference_mode(), LastTokenAttention(backend.model, layer) as probe:
            backend.model(**inputs, use_cache=True)
        maps[layer] = probe.weights[0][inputs["input_ids"][0] == backend.image_token_id]
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("full")))
    parser.add_argument("--data", default="synthetic:val:400")
    parser.add_argument("--out", default="runs/attention_probe.json")
    args = parser.parse_args()

    backend = HFBackend.load(args.model)
    layers = len(backend.model.model.language_model.layers)
    cell = backend.processor.image_processor.patch_size * backend.processor.image_processor.merge_size
    records, _ = resolve(args.data)
    detail = [r for r in records if r.kind == "detail" and r.evidence]
    hits: dict[str, dict[int, list[bool]]] = {}
    chance = []
    for record in detail:
        image = load_image(record.image)
        view = low_res_view(image)
        columns = view.width // cell
        plate = record.evidence_boxes()[0]
        asked, generic = attention(backend, view, record.question, layers), attention(backend, view, GENERIC, layers)
        chance.append(plate.area / (image.width * image.height))
        for layer in asked:
            for kind, weights in (("raw", asked[layer]), ("relative", asked[layer] / (generic[layer] + 1e-6))):
                grid = weights.view(-1, columns)
                peak = attention_box(grid, 1.0, 0.0, image.size)
                hits.setdefault(kind, {}).setdefault(layer, []).append(peak.intersection(plate) > 0)
                for share in SHARES:
                    for margin in MARGINS:
                        crops = boxes_to_crops([attention_box(grid, share, margin, image.size)], *image.size).crop_ids
                        name = f"{kind}_crop_share{share}_margin{margin}"
                        hits.setdefault(name, {}).setdefault(layer, []).append(
                            covers_evidence([plate], crops, *image.size)
                        )
    report = {
        "model": args.model,
        "data": args.data,
        "detail_questions": len(detail),
        "chance_token_on_plate": statistics.fmean(chance),
        **{kind: {str(layer): statistics.fmean(v) for layer, v in by_layer.items()} for kind, by_layer in hits.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

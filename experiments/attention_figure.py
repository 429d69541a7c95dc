"""Where the base model looks at low resolution: its attention over the view, for a few test samples.

    python experiments/attention_figure.py [--model src/awares/assets/base] [--out docs/attention.png]

Runs the ``attention`` policy on three detail and two global questions of the synthetic test split
and draws, for each, the low-res view with the last prompt token's attention at the last layer
laid over it, the box whose crops the policy would fetch, and the focus and confidence that decide
whether it does.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from awares.data import generate  # noqa: E402
from awares.models import HFBackend, default_model_dir  # noqa: E402
from awares.runtime import Engine, Request  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_dir("full")))
    parser.add_argument("--out", default="docs/attention.png")
    args = parser.parse_args()

    samples = list(generate("test", 40))
    chosen = [s for s in samples if s.kind == "detail"][:3] + [s for s in samples if s.kind == "global"][:2]
    engine = Engine(HFBackend.load(args.model))
    results = engine.answer_batch([Request(s.image, s.question) for s in chosen], "attention")
    figure, axes = plt.subplots(1, len(chosen), figsize=(4 * len(chosen), 4.2))
    for axis, sample, result in zip(axes, chosen, results):
        look = result.attention
        grid = np.array(look["grid"])
        width, height = sample.image.size
        axis.imshow(sample.image, extent=(0, width, height, 0))
        weight = 0.75 * grid / grid.max()  # opaque where the model looks, clear elsewhere
        axis.imshow(grid, extent=(0, width, height, 0), cmap="winter", alpha=weight, interpolation="nearest")
        x0, y0, x1, y1 = look["box"]
        called = bool(result.crops)
        axis.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, ec="cyan" if called else "gray"))
        title = f"{sample.kind}: {sample.answers[0]} -> {result.answer}\n"
        title += f"focus {look['focus']:.2f}, conf {look['confidence']:.2f}, crops {','.join(result.crops) or '-'}"
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(args.out, dpi=80)
    print(args.out)


if __name__ == "__main__":
    main()

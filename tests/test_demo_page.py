"""The demo page in a real headless Chromium (Debian's package, driven by Playwright): upload an
image, ask, see the streamed answer, the crop the model asked for highlighted on the low-res view,
and that crop at full resolution."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from awares.data import generate
from awares.models import HFBackend, default_model_dir
from awares.models.endpoint import data_url
from awares.runtime import Engine, RuntimeConfig
from awares.serve import ServeConfig

from .conftest import Scripted, Server, chat, scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own network features fail on a closed network; these flags keep it to the page.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@contextmanager
def answered(server: Server, photo: Path, question: str, policy: str = "crops") -> Iterator[Any]:
    """The demo page in headless Chromium once it has answered ``question`` about ``photo``."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url)
        page.set_input_files("#file", str(photo))
        page.wait_for_function("document.getElementById('view').width > 1")
        page.fill("#question", question)
        page.select_option("#policy", policy)
        page.click("#send")
        page.wait_for_selector("body[data-answered=yes]", timeout=30_000)
        yield page
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_demo_page_shows_the_answer_and_highlights_the_crop_asked_for(tmp_path, backend):
    engine = Engine(Scripted(backend, ["GET_CROPS: ['1']"]), RuntimeConfig(max_new_tokens=4))
    server = Server(engine, ServeConfig(max_batch=1))
    scene(448, 336).save(tmp_path / "photo.png")
    try:
        with answered(server, tmp_path / "photo.png", "What is written on the label?") as page:
            assert page.inner_text("#crops") == "[1] top-right" and page.inner_text("#answer") != ""
            assert "of 192 for the full image" in page.inner_text("#tokens")
            # the crop the model received, at full resolution: the top-right quarter of 448x336
            sizes = page.eval_on_selector_all("#crop-images canvas", "cs => cs.map(c => [c.width, c.height])")
            assert sizes == [[224, 168]] and page.is_visible("#crop-title")
            # the canvas is 224x168 (half of each side): crop 1 (top right) is tinted, crop 2 is not
            tint = "(x, y) => { const d = document.getElementById('view').getContext('2d')" \
                   ".getImageData(x, y, 1, 1).data; return [d[0], d[1], d[2]]; }"  # fmt: skip
            inside, outside = page.evaluate(f"({tint})(200, 20)"), page.evaluate(f"({tint})(20, 150)")
            background = [230, 230, 220]  # the scene's flat background at both points
            assert inside != background and inside[0] > inside[2]  # orange over the light background
            assert outside == background
            page.screenshot(path=str(tmp_path / "demo.png"))
    finally:
        server.stop()
    assert (tmp_path / "demo.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_demo_page_draws_the_attention_policys_map(tmp_path):
    sample = next(s for s in generate("test", 20) if s.kind == "detail")  # the shipped base looks at its code
    server = Server(Engine(HFBackend.load(default_model_dir("full"), device="cpu")), ServeConfig(max_batch=1))
    sample.image.save(tmp_path / "photo.png")
    try:
        with answered(server, tmp_path / "photo.png", sample.question, "attention") as page:
            assert page.inner_text("#attention").startswith("confidence ")
            _, body, _ = server.post(chat(data_url(sample.image), sample.question, policy="attention"))
            look, asked = body["awares"]["attention"], body["awares"]["crops"]
            boxes = [b for c, b in body["awares"]["crop_boxes"].items() if c in asked or "all" in asked]
            grid = torch.tensor(look["grid"])
            width, height = page.evaluate(
                "[document.getElementById('view').width, document.getElementById('view').height]"
            )
            scale, cell = width / sample.image.width, (width / grid.shape[1], height / grid.shape[0])
            drawn = [*body["awares"]["crop_boxes"].values(), look["box"]]  # every outline on the view
            columns, rows = ([v * scale for b in drawn for v in b[i::2]] for i in (0, 1))

            def clear(r: int, c: int) -> tuple[int, int]:
                """A point of cell (r, c) at least 3 pixels from every outline."""
                points = [(int((c + fx) * cell[0]), int((r + fy) * cell[1])) for fx in (0.3, 0.7) for fy in (0.3, 0.7)]
                return next(
                    (x, y) for x, y in points if min(abs(v - x) for v in columns) > 3 < min(abs(v - y) for v in rows)
                )

            colours = """([x, y]) => {
                const view = document.getElementById('view'), plain = document.createElement('canvas');
                plain.width = view.width; plain.height = view.height;
                plain.getContext('2d').drawImage(image, 0, 0, plain.width, plain.height);
                const at = (c) => Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3));
                return [at(view), at(plain)];
            }"""

            def over(colour: list[float], paint: tuple[int, int, int], alpha: float) -> list[float]:
                return [(1 - alpha) * v + alpha * p for v, p in zip(colour, paint)]

            # The map as the server sent it, over the view: a red wash of 0.6 x weight / peak at each
            # point, under the orange fill (alpha 0.25) of each crop asked for there.
            for r, c in (divmod(int(i), grid.shape[1]) for i in (grid.argmax(), grid.argmin())):
                x, y = clear(r, c)
                shown, expected = page.evaluate(colours, [x, y])
                expected = over(expected, (220, 0, 0), 0.6 * float(grid[r, c] / grid.max()))
                for x0, y0, x1, y1 in boxes:
                    if x0 <= x / scale < x1 and y0 <= y / scale < y1:
                        expected = over(expected, (255, 160, 0), 0.25)
                assert max(abs(a - b) for a, b in zip(shown, expected)) <= 3, (shown, expected)
            assert float(grid.min() / grid.max()) < 0.2  # so the two points differ: the map has a peak
    finally:
        server.stop()

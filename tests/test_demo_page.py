"""The demo page in a real headless Chromium (Debian's package, driven by Playwright): upload an
image, ask, see the streamed answer, the crop the model asked for highlighted on the low-res view,
and that crop at full resolution."""

import shutil

import pytest

from awares.runtime import Engine, RuntimeConfig
from awares.serve import ServeConfig

from .conftest import Scripted, scene
from .test_serve import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own network features fail on a closed network; these flags keep it to the page.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_demo_page_shows_the_answer_and_highlights_the_crop_asked_for(tmp_path, backend):
    sync_api = pytest.importorskip("playwright.sync_api")
    engine = Engine(Scripted(backend, ["GET_CROPS: ['1']"]), RuntimeConfig(max_new_tokens=4))
    server = Server(engine, ServeConfig(max_batch=1))
    scene(448, 336).save(tmp_path / "photo.png")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_page()
            page.goto(server.url)
            page.set_input_files("#file", str(tmp_path / "photo.png"))
            page.wait_for_function("document.getElementById('view').width > 1")
            page.fill("#question", "What is written on the label?")
            page.click("#send")
            page.wait_for_selector("body[data-answered=yes]", timeout=30_000)
            assert page.inner_text("#crops") == "1" and page.inner_text("#answer") != ""
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
            browser.close()
    finally:
        server.stop()
    assert (tmp_path / "demo.png").stat().st_size > 10_000

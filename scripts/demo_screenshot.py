"""The README's screenshot of the demo page: the shipped policy answering a benchmark question.

    python scripts/demo_screenshot.py [--out docs/demo.png]

Serves the shipped models on a loopback port, opens the page in Debian's headless chromium (driven
by Playwright), uploads a detail sample of the synthetic benchmark, asks its question and saves a
screenshot of the streamed answer, the crops the policy asked for highlighted and shown at full resolution.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from awares.data import generate
from awares.models import HFBackend, default_model_dir
from awares.runtime import Engine, RuntimeConfig
from awares.serve import ServeConfig, create_app, serve_in_thread

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/demo.png")
    parser.add_argument("--sample", type=int, default=11, help="which detail question of the test split")
    args = parser.parse_args()

    sample = [s for s in generate("test", 40) if s.kind == "detail"][args.sample]
    image = Path(tempfile.mkdtemp()) / "sample.png"
    sample.image.save(image)
    app = create_app(Engine(HFBackend.load(default_model_dir("crops")), RuntimeConfig()), ServeConfig())
    server, url = serve_in_thread(app)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 620})
        page.goto(url)
        page.set_input_files("#file", str(image))
        page.wait_for_function("document.getElementById('view').width > 1")
        page.fill("#question", sample.question)
        page.click("#send")
        page.wait_for_selector("body[data-answered=yes]", timeout=60_000)
        page.screenshot(path=args.out, full_page=True)
        print(f"{args.out}: {sample.question!r} -> {page.inner_text('#answer')!r} (truth {sample.answers[0]!r}), "
              f"crops {page.inner_text('#crops')}")  # fmt: skip
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main()

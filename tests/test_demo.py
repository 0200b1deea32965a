"""The Gradio demo in a real headless browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
from playwright.sync_api import sync_playwright

from test_serving import BIN, free_port, start

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def demo_url(tiny_onnx, tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: run `make setup-browser` (apt-get install chromium)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process = start(
        [str(BIN / "polypseg"), "demo", f"--model={tiny_onnx}", f"--port={port}"],
        tmp_path_factory.mktemp("demo-cwd"),
        url,
    )
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def test_example_click_shows_overlay_mask_and_area(demo_url, tmp_path):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(demo_url, wait_until="networkidle")
        assert page.get_by_text("NOT FOR CLINICAL USE").count() >= 1
        assert page.locator("#examples img").count() == 4
        page.locator("#examples img").first.click()
        page.wait_for_selector("#overlay img", timeout=60_000)
        page.wait_for_selector("#mask img", timeout=60_000)
        assert "Polyp area:" in page.locator("#area").inner_text()
        page.screenshot(path=str(tmp_path / "demo.png"))
        browser.close()

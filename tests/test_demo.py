"""The Gradio demo in a real headless browser (Debian's Chromium driven by Playwright).

Skipped, loudly, where Chromium is missing (a fresh machine's `make test`); CI installs it
(`make setup-browser`) and sets POLYPSEG_REQUIRE_BROWSER=1, which turns the skip into a failure.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import warnings

import pytest
import requests
from PIL import Image
from playwright.sync_api import sync_playwright

from test_serving import BIN, flat_png, free_port, start

pytestmark = pytest.mark.data  # reads images from ../shared/data

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


def require_browser() -> None:
    if os.path.exists(CHROMIUM):
        return
    message = "Chromium is missing: the demo's browser tests need `make setup-browser` (root)"
    if os.environ.get("POLYPSEG_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="module")
def demo(tiny_onnx, tmp_path_factory):
    """The demo's URL and its temp root (its private upload folder lives there)."""
    require_browser()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    temp = tmp_path_factory.mktemp("demo-tmp")
    os.environ["TMPDIR"], old = str(temp), os.environ.get("TMPDIR")
    try:
        process = start(
            [str(BIN / "polypseg"), "demo", f"--onnx={tiny_onnx}", f"--port={port}"],
            tmp_path_factory.mktemp("demo-cwd"),
            url,
        )
    finally:
        os.environ.pop("TMPDIR") if old is None else os.environ.update(TMPDIR=old)
    yield url, temp
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    assert not list(temp.glob("polypseg-demo-*")), "uploads left behind after the demo stopped"


@pytest.fixture
def demo_url(demo):
    return demo[0]


def upload(page, path) -> None:
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.locator("#segment-button").click()


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


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("notes.jpg", lambda: b"these are my notes, not a picture", "not an image"),
        ("huge.png", lambda: flat_png(12000, 12000), "accepted are at most"),  # 17 kB, 144 MP
    ],
)
def test_bad_upload_says_what_is_wrong(demo, tmp_path, name, content, words):
    url, temp = demo
    path = tmp_path / name
    path.write_bytes(content())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url, wait_until="networkidle")
        upload(page, path)
        page.get_by_text(words).first.wait_for(timeout=30_000)
        browser.close()
    assert list(temp.glob("polypseg-demo-*")), "uploads are not in the demo's private folder"


def test_upload_size_is_capped(demo):
    url, _ = demo
    big = io.BytesIO()
    Image.new("L", (64, 64)).save(big, format="PNG")
    payload = big.getvalue() + b"\0" * (21 * 1024 * 1024)
    response = requests.post(
        f"{url}gradio_api/upload", files={"files": ("big.png", payload, "image/png")}, timeout=60
    )
    assert response.status_code == 413, response.text[:300]

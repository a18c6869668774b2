"""The Gradio demo in a real browser: Debian's chromium, headless, driven by playwright (no browser
download is possible here), against a live uvicorn on loopback. Uploads the sample image, sees the
chart and the top label; every request the page makes stays on loopback (no CDN, no analytics)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from app.sample_study import DEMO_IMAGE
from app.web.classifier import WarmModel
from app.web.server import create_app
from tests.support.web import AUTH, live_server, web_config

CHROMIUM = Path("/usr/bin/chromium")
#: Where to keep the screenshot (docs/web-demo.png is made so); else the test's temporary folder.
SCREENSHOT_ENV = "BIOMEDCLIP_DEMO_SCREENSHOT"
#: Chromium's own calls home (component updates, safe browsing, …) are off: only the page's requests remain.
QUIET_CHROMIUM = ["--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
                  "--disable-default-apps", "--metrics-recording-only", "--no-pings"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt install chromium)")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, fp32_model_package: Path) -> Iterator[str]:
    app = create_app(web_config(tmp_path_factory.mktemp("web-state"), fp32_model_package, demo=True), WarmModel.load(fp32_model_package))
    with live_server(app) as url:
        yield url


def test_the_demo_classifies_an_uploaded_dicom_draws_the_chart_and_compares_backends_offline(base: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    hosts: set[str] = set()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=QUIET_CHROMIUM)
        context = browser.new_context(extra_http_headers=AUTH, viewport={"width": 1280, "height": 1100})
        page = context.new_page()
        page.on("request", lambda request: hosts.add(urlparse(request.url).hostname or request.url))
        page.goto(f"{base}/demo/", wait_until="networkidle")
        page.set_input_files("#upload input[type=file]", str(DEMO_IMAGE))
        page.locator("#classify").click()
        page.wait_for_selector("#summary :text('Top label')", timeout=60_000)
        page.wait_for_selector("#chart canvas, #chart svg", timeout=30_000)
        page.wait_for_selector("#seen img", timeout=30_000)
        summary = page.locator("#summary").inner_text()
        page.locator("#compare").click()
        expect(page.locator("#comparison")).to_contain_text("unavailable", timeout=180_000)
        comparison = page.locator("#comparison").inner_text()
        screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "web-demo.png")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert "Top label" in summary and "onnxruntime" in summary and "RANDOM" in summary
    assert "pytorch" in comparison and "unavailable" in comparison, "every backend and precision is listed, loaded or not"
    assert screenshot.stat().st_size > 20_000
    assert hosts <= {"127.0.0.1", "localhost"}, f"requests left loopback: {sorted(hosts)}"


def test_without_a_token_the_demo_is_not_served(base: str) -> None:
    import httpx

    assert httpx.get(f"{base}/demo/", timeout=10).status_code == 401

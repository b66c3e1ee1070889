"""The upload page at `/` in headless Chromium (Debian's `chromium`, driven by Playwright), against the
shared real server: upload jfk.flac, read the transcript, prosody and the pitch/energy plot."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import service_support as support
from service_support import JFK, Server

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]
main_server = support.main_server  # the shared server fixture

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_upload_page_shows_transcript_prosody_and_plot(main_server: Server, browser) -> None:
    page = browser.new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(main_server.url) else outside.append(r.url))
    page.goto(main_server.url + "/")
    assert page.title() == "slower-whisper"
    assert errors == []  # the script loaded and parsed
    page.fill("#apikey", main_server.api_key or "")
    page.set_input_files("#file", str(JFK))
    page.check("#enrich")
    page.click("#submit")
    # Waits use locators, not wait_for_function: its string predicates need eval, which the page's
    # content security policy forbids.
    page.locator("#status").filter(has_text=re.compile(r"^\s*Done")).wait_for(timeout=120_000)
    rows = page.locator("#segments tbody tr")
    assert rows.count() >= 1
    assert "country" in page.inner_text("#segments").lower()
    pitches = [t for t in page.locator("#segments td.pitch").all_inner_texts() if t != "–"]
    energies = [t for t in page.locator("#segments td.energy").all_inner_texts() if t != "–"]
    assert pitches and all(50 <= float(t) <= 500 for t in pitches)
    assert energies and all(-100 < float(t) <= 0 for t in energies)
    assert any(t.startswith("[audio:") for t in page.locator("#segments td.how").all_inner_texts())
    assert int(page.get_attribute("#plot", "data-points") or 0) >= 2 * len(pitches) - rows.count()
    assert "pitch (Hz)" in page.inner_text("#legend")
    # The plot really drew something: some canvas pixels are neither white nor transparent.
    coloured = page.evaluate(
        """() => { const c = document.getElementById('plot');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0;
                   for (let i = 0; i < d.length; i += 4) if (d[i+3] && (d[i] < 200 || d[i+2] < 200)) n++;
                   return n; }"""
    )
    assert coloured > 200
    assert errors == [] and outside == []
    # A wrong key shows the server's error message instead of a result.
    page.fill("#apikey", "wrong-key")
    page.click("#submit")
    page.locator("#status").filter(has_text=re.compile(r"^\s*Failed")).wait_for()
    assert "API key" in page.inner_text("#status")
    if shot := os.environ.get("SERVICE_WEB_SCREENSHOT"):
        page.screenshot(path=shot, full_page=True)
    page.close()

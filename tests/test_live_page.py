"""The page's live mode and speaker view in headless Chromium (Debian's `chromium`, driven by Playwright),
against the shared real server.

Live mode: Chromium's fake microphone plays jfk.flac (converted to WAV) in real time; the page streams it
to /v1/realtime, shows partial lines while the speech goes on and final lines with their prosody when the
turns end. Speakers: a transcript document with speakers, opened in the page, shows each speaker's lines in
its own colour, and renaming a speaker renames every one of its lines.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import service_support as support
from conftest import ffmpeg
from service_support import JFK, Server

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]
main_server = support.main_server  # the shared server fixture

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jfk as 48 kHz 16-bit WAV, with 3 s of silence after it (the end of the last turn)."""
    out = tmp_path_factory.mktemp("live-page") / "jfk.wav"
    ffmpeg("-i", str(JFK), "-ac", "1", "-ar", "48000", "-c:a", "pcm_s16le", "-af", "apad=pad_dur=3", str(out))
    return out


@pytest.fixture(scope="module")
def browser(microphone_wav: Path) -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


def watch(page, server: Server) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    host = server.url.split("://", 1)[1]
    page.on("request", lambda r: None if host in r.url else outside.append(r.url))
    return errors, outside


def test_live_mode_streams_the_microphone(main_server: Server, browser) -> None:
    context = browser.new_context(permissions=["microphone"])
    page = context.new_page()
    errors, outside = watch(page, main_server)
    page.goto(main_server.url + "/")
    page.fill("#apikey", main_server.api_key or "")
    page.check("#enrich")
    page.click("#live-start")
    page.locator("#live-status").filter(has_text="Listening").wait_for(timeout=30_000)
    # Partial text while jfk is still speaking, then final lines as the turns end.
    page.locator("#live-lines li.partial .text").filter(has_text=re.compile(r"\w")).first.wait_for(
        timeout=60_000
    )
    page.locator("#live-lines li.final").filter(has_text=re.compile(r"for your country", re.I)).wait_for(
        timeout=90_000
    )
    finals = page.locator("#live-lines li.final")
    text = " ".join(page.locator("#live-lines li.final .text").all_inner_texts()).lower()
    for words in ("fellow american", "ask not", "what your country can do for you"):
        assert words in text, text
    # Prosody filled in on the final lines (the session asked for it with the checkbox).
    pitches = [float(p) for li in finals.all() if (p := li.get_attribute("data-pitch"))]
    assert pitches and all(60 <= p <= 400 for p in pitches), pitches
    assert any("Hz" in t for t in page.locator("#live-lines li.final .how").all_inner_texts())
    page.click("#live-stop")
    page.locator("#live-status").filter(has_text="Stopped").wait_for()
    assert errors == [] and outside == []
    context.close()


def test_live_mode_with_a_wrong_key_says_so(main_server: Server, browser) -> None:
    context = browser.new_context(permissions=["microphone"])
    page = context.new_page()
    page.goto(main_server.url + "/")
    page.fill("#apikey", "wrong-key")
    page.click("#live-start")
    page.locator("#live-status.error").filter(has_text="API key").wait_for(timeout=30_000)
    assert page.is_enabled("#live-start")
    context.close()


DOC = {
    "file": "call.wav",
    "language": "en",
    "duration": 9.0,
    "text": "Hello there. Hi, how are you? Fine, thanks. Good to hear.",
    "speakers": [{"id": "SPEAKER_00", "total_s": 5.0}, {"id": "SPEAKER_01", "total_s": 4.0}],
    "segments": [
        {"id": 0, "start": 0.0, "end": 2.0, "text": " Hello there.", "speaker": "SPEAKER_00"},
        {"id": 1, "start": 2.0, "end": 4.0, "text": " Hi, how are you?", "speaker": "SPEAKER_01"},
        {"id": 2, "start": 4.0, "end": 7.0, "text": " Fine, thanks.", "speaker": "SPEAKER_00"},
        {"id": 3, "start": 7.0, "end": 9.0, "text": " Good to hear.", "speaker": "SPEAKER_01"},
    ],
}


def test_speakers_in_colour_and_renamed_everywhere(main_server: Server, browser, tmp_path: Path) -> None:
    page = browser.new_page()
    errors, outside = watch(page, main_server)
    page.goto(main_server.url + "/")
    doc = tmp_path / "call.json"
    doc.write_text(json.dumps(DOC))
    page.set_input_files("#open-doc", str(doc))
    page.locator("#status").filter(has_text="Opened call.json").wait_for()
    cells = page.locator("#segments td.speaker")
    assert cells.all_inner_texts() == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_00", "SPEAKER_01"]
    colours = [c.evaluate("el => getComputedStyle(el).color") for c in cells.all()]
    assert colours[0] == colours[2] and colours[1] == colours[3] and colours[0] != colours[1]
    assert page.is_visible("#speakers") and "5.0 s" in page.inner_text("#speakers")

    page.fill("input.speaker-name[data-speaker='SPEAKER_01']", "Alice")
    assert cells.all_inner_texts() == ["SPEAKER_00", "Alice", "SPEAKER_00", "Alice"]
    page.fill("input.speaker-name[data-speaker='SPEAKER_00']", "Bob")
    assert cells.all_inner_texts() == ["Bob", "Alice", "Bob", "Alice"]
    assert "Good to hear." in page.inner_text("#segments tbody tr:nth-child(4)")

    # A transcript without speakers shows no speaker column.
    plain = dict(
        DOC, speakers=[], segments=[{k: v for k, v in s.items() if k != "speaker"} for s in DOC["segments"]]
    )
    doc.write_text(json.dumps(plain))
    page.set_input_files("#open-doc", [])
    page.set_input_files("#open-doc", str(doc))
    page.locator("#speakers").wait_for(state="hidden")
    assert not page.locator("#segments th.speaker-col").is_visible()
    assert errors == [] and outside == []
    page.close()

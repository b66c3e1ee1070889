"""The page as a place to review a conversation, in headless Chromium (Debian's `chromium`, driven by
Playwright) against the shared real server (tiny.en, prosody on, emotion off).

A real two-speaker recording (pyannote's sample: two women on a phone call, 30 s) is uploaded with
Speakers ticked and a count of 2; the page then plays it from the browser's copy: a line click plays from
the line's start, the highlighted line follows playback, the keys step through the lines, the timeline has
a lane per speaker whose totals are the document's, renaming a speaker carries into every export, and each
export parses (SRT and VTT by the parsers below, RTTM by its line format, JSON by the project's schema).
Transcripts opened from disk, with their recording chosen separately, show why a feature is missing, keep
the playing line in view on a long transcript, and fit a phone's width.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import service_support as support
from conftest import DATA, ffmpeg
from service_support import Server

from transcription import schema
from transcription.service.headers import PAGE_POLICY

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]
main_server = support.main_server  # the shared server fixture

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CALL = DATA / "multi_speaker" / "pyannote_sample" / "sample.wav"
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
        )
        yield browser
        browser.close()


def watch(page, server: Server) -> tuple[list[str], list[str]]:
    """Console errors (a CSP violation is one) and requests to anywhere but the server or a blob."""
    errors: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith((server.url, "blob:", "data:")) else outside.append(r.url),
    )
    return errors, outside


class Review:
    """The page after the upload, the document the server sent it, and what the page logged."""

    def __init__(self, page, doc: dict, errors: list[str], outside: list[str]) -> None:
        self.page, self.doc, self.errors, self.outside = page, doc, errors, outside

    def current_time(self) -> float:
        return self.page.evaluate("() => document.getElementById('player').currentTime")

    def paused(self) -> bool:
        return self.page.evaluate("() => document.getElementById('player').paused")

    def pause(self) -> None:
        self.page.evaluate("() => document.getElementById('player').pause()")

    def playing_index(self) -> int | None:
        row = self.page.locator("#segments tr.playing")
        return int(row.get_attribute("data-index")) if row.count() == 1 else None

    def download(self, fmt: str) -> str:
        with self.page.expect_download() as info:
            self.page.click(f"#exports button[data-format='{fmt}']")
        assert info.value.suggested_filename == f"sample.{fmt}"
        return Path(info.value.path()).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def review(main_server: Server, browser) -> Iterator[Review]:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, outside = watch(page, main_server)
    response = page.goto(main_server.url + "/")
    assert response.headers["content-security-policy"] == PAGE_POLICY  # the strict policy is kept
    page.fill("#apikey", main_server.api_key or "")
    page.set_input_files("#file", str(CALL))
    page.check("#enrich")
    assert page.is_disabled("#num-speakers")  # counts only with speakers
    page.check("#diarize")
    page.fill("#num-speakers", "2")
    with page.expect_response(lambda r: r.url.endswith("/v1/audio/transcriptions")) as answer:
        page.click("#submit")
    page.locator("#status").filter(has_text=re.compile(r"^\s*Done")).wait_for(timeout=120_000)
    doc = answer.value.json()
    yield Review(page, doc, errors, outside)
    page.close()


def test_upload_sends_the_speaker_options_and_gets_two_speakers(review: Review) -> None:
    # The server ran with what the form asked (it records its diarization settings in the document).
    diarization = review.doc["meta"]["diarization"]
    assert diarization["status"] == "ok" and diarization["settings"]["num_speakers"] == 2
    assert all(s["audio_state"]["status"]["prosody"] == "ok" for s in review.doc["segments"])
    assert [s["id"] for s in review.doc["speakers"]] == ["SPEAKER_00", "SPEAKER_01"]
    rows = review.page.locator("#segments tbody tr")
    assert rows.count() == len(review.doc["segments"]) >= 3
    speakers = review.page.locator("#segments td.speaker").all_inner_texts()
    assert speakers == [s["speaker"] for s in review.doc["segments"]]
    assert "Chicago" in review.page.inner_text("#segments")
    assert review.errors == [] and review.outside == []


def test_a_line_click_plays_from_its_start_and_the_highlight_follows(review: Review) -> None:
    page, segments = review.page, review.doc["segments"]
    i = 2
    page.click(f"#segments tbody tr[data-index='{i}'] td.text")
    assert not review.paused()
    t = review.current_time()
    assert segments[i]["start"] - 0.01 <= t < segments[i]["end"], (t, segments[i])
    assert review.playing_index() == i
    # Playback goes on into the next line, and the highlight moves there by itself.
    page.locator(f"#segments tr.playing[data-index='{i + 1}']").wait_for(timeout=WAIT_MS)
    assert page.locator("#segments tr.playing").count() == 1
    assert review.current_time() >= segments[i + 1]["start"]


def test_keys_play_pause_and_step_through_the_lines(review: Review) -> None:
    page, segments = review.page, review.doc["segments"]
    index = 1
    page.click(f"#segments tbody tr[data-index='{index}'] td.text")
    page.click("#summary")  # the keys act on the page, not on a field
    assert not review.paused()
    page.keyboard.press(" ")
    assert review.paused()
    page.keyboard.press(" ")
    assert not review.paused()
    page.keyboard.press(" ")
    assert review.paused()
    assert review.playing_index() == index
    page.keyboard.press("ArrowDown")
    assert review.playing_index() == index + 1
    assert review.current_time() >= segments[index + 1]["start"] - 0.01
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert review.playing_index() == index - 1
    assert segments[index - 1]["start"] - 0.01 <= review.current_time() < segments[index - 1]["end"]
    page.keyboard.press(" ")
    assert review.paused()
    page.click("#play")  # the page's own button does the same
    assert not review.paused()
    page.locator("#play").filter(has_text="Pause").wait_for()  # the label follows the media's events
    page.click("#play")
    assert review.paused()
    page.locator("#play").filter(has_text="Play").wait_for()


def test_playback_changes_only_the_highlight(review: Review) -> None:
    """While the recording plays across lines, the rows are the same elements and only their class
    changes: no re-render of the transcript per frame."""
    page = review.page
    page.evaluate(
        """() => { window.__mutations = [];
                   new MutationObserver((records) => window.__mutations.push(...records.map((r) =>
                     [r.type, r.target.nodeName, r.attributeName])))
                     .observe(document.querySelector('#segments tbody'),
                              {subtree: true, childList: true, attributes: true, characterData: true}); }"""
    )
    page.click("#segments tbody tr[data-index='0'] td.text")
    page.locator("#segments tr.playing[data-index='1']").wait_for(timeout=WAIT_MS)
    review.pause()
    records = page.evaluate("() => window.__mutations")
    assert records, "the highlight never changed"
    assert {tuple(r) for r in records} == {("attributes", "TR", "class")}, records
    assert len(records) <= 10


def test_timeline_has_a_lane_per_speaker_with_the_documents_totals(review: Review) -> None:
    page, doc = review.page, review.doc
    lanes = page.locator("#speakers .speaker-lane")
    assert lanes.count() == len(doc["speakers"]) == 2
    shares = []
    for lane, speaker in zip(lanes.all(), doc["speakers"], strict=True):
        assert lane.get_attribute("data-speaker") == speaker["id"]
        assert float(lane.get_attribute("data-total-s")) == pytest.approx(speaker["total_s"], abs=1e-3)
        share = float(lane.get_attribute("data-share"))
        shares.append(share)
        label = lane.locator(".speaker-time").inner_text()
        assert f"{speaker['total_s']:.1f} s" in label and f"{round(100 * share)}%" in label
        turns = [t for t in doc["turns"] if t["speaker"] == speaker["id"]]
        bars = lane.locator(".turn")
        assert bars.count() == len(turns)
        starts = [float(b.get_attribute("data-start")) for b in bars.all()]
        assert starts == pytest.approx([t["start"] for t in turns])
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    total = sum(s["total_s"] for s in doc["speakers"])
    assert shares[0] == pytest.approx(doc["speakers"][0]["total_s"] / total, abs=1e-3)
    assert page.locator("#speakers .overlap-lane").count() == 1
    # A click on a turn plays it from its start.
    turn = [t for t in doc["turns"] if t["speaker"] == "SPEAKER_01"][-1]
    page.locator("#speakers .speaker-lane[data-speaker='SPEAKER_01'] .turn").last.click()
    assert turn["start"] - 0.01 <= review.current_time() < turn["end"]
    review.pause()


def test_pitch_and_energy_within_lines_on_the_timelines_axis(review: Review) -> None:
    page, doc = review.page, review.doc
    contours = [s["audio_state"]["prosody"]["contour"] for s in doc["segments"]]
    assert all(c and c["step_s"] == 0.1 for c in contours)  # Stage 2 ran and wrote them
    expected = 0
    for seg, c in zip(doc["segments"], contours, strict=True):
        for values in (c["pitch_hz"], c["energy_db"]):
            expected += sum(
                1
                for k, v in enumerate(values)
                if v is not None and seg["start"] + (k + 0.5) * 0.1 <= doc["duration"]
            )
    assert int(page.get_attribute("#plot", "data-points")) == expected > 10 * len(doc["segments"])
    assert "every 0.1 s" in page.inner_text("#legend")
    # The chart spans the same width as the lanes' tracks: one time axis.
    track = page.locator("#speakers .speaker-lane .track").first.bounding_box()
    plot = page.locator("#plot").bounding_box()
    assert plot["x"] == pytest.approx(track["x"], abs=2) and plot["width"] == pytest.approx(
        track["width"], abs=4
    )


def test_why_not_says_emotion_was_turned_off(review: Review) -> None:
    notes = review.page.locator("#why-not li[data-feature='emotion']")
    assert notes.count() == 1
    assert "Emotion: not computed: emotion was turned off" in notes.inner_text()
    assert all(s["audio_state"]["status"]["emotion"] == "skipped" for s in review.doc["segments"])
    cell = review.page.locator("#segments td.emotion").first
    assert cell.inner_text() == "–" and "turned off" in cell.get_attribute("title")


def parse_cues(text: str, vtt: bool) -> list[tuple[float, float, str]]:
    """A strict SRT/WebVTT reader: numbered (SRT) blocks of one timing line and text, blank-line separated."""
    sep = "." if vtt else ","
    clock = rf"(\d\d):(\d\d):(\d\d){re.escape(sep)}(\d\d\d)"
    timing = re.compile(rf"^{clock} --> {clock}$")
    blocks = text.strip("\n").split("\n\n")
    if vtt:
        assert blocks.pop(0) == "WEBVTT"
    cues = []
    for n, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        if not vtt:
            assert lines.pop(0) == str(n)
        m = timing.match(lines[0])
        assert m, lines[0]
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in m.groups())
        start, end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert start <= end and lines[1:] and all(lines[1:])
        cues.append((start, end, "\n".join(lines[1:])))
    return cues


def test_renaming_carries_into_the_view_and_every_export(review: Review) -> None:
    page, doc = review.page, review.doc
    before = json.loads(review.download("json"))
    assert before["segments"] == doc["segments"] and before["turns"] == doc["turns"]  # what is on screen
    page.fill("input.speaker-name[data-speaker='SPEAKER_01']", "Sheila Texas")
    names = {"SPEAKER_00": "SPEAKER_00", "SPEAKER_01": "Sheila Texas"}
    expected = [names[s["speaker"]] for s in doc["segments"]]
    assert page.locator("#segments td.speaker").all_inner_texts() == expected

    exported = json.loads(review.download("json"))
    schema.validate(exported)  # the JSON Schema plus the timing and speaker checks
    assert [s["id"] for s in exported["speakers"]] == ["SPEAKER_00", "Sheila Texas"]
    assert [s["speaker"] for s in exported["segments"]] == expected
    assert {w["speaker"] for s in exported["segments"] for w in s["words"]} <= {"SPEAKER_00", "Sheila Texas"}
    assert [t["speaker"] for t in exported["turns"]] == [names[t["speaker"]] for t in doc["turns"]]

    srt = parse_cues(review.download("srt"), vtt=False)
    vtt = parse_cues(review.download("vtt"), vtt=True)
    for cues in (srt, vtt):
        assert len(cues) == len(doc["segments"])
        for (start, end, _), seg in zip(cues, doc["segments"], strict=True):
            assert start == pytest.approx(seg["start"], abs=1e-3) and end == pytest.approx(
                seg["end"], abs=1e-3
            )
    for (_, _, text), seg in zip(srt, doc["segments"], strict=True):
        assert text == f"{names[seg['speaker']]}: {' '.join(seg['text'].split())}"
    for (_, _, text), seg in zip(vtt, doc["segments"], strict=True):
        assert text.startswith(f"<v {names[seg['speaker']]}>")

    txt = review.download("txt").splitlines()
    assert len(txt) == len(doc["segments"])
    assert all(
        line.startswith("[") and f"] {names[seg['speaker']]}: " in line
        for line, seg in zip(txt, doc["segments"], strict=True)
    )

    rttm = review.download("rttm").splitlines()
    assert len(rttm) == len(doc["turns"])
    for line, turn in zip(rttm, doc["turns"], strict=True):
        fields = line.split(" ")
        assert len(fields) == 10 and fields[0] == "SPEAKER" and fields[1] == "sample" and fields[2] == "1"
        assert fields[5:7] == ["<NA>", "<NA>"] and fields[8:] == ["<NA>", "<NA>"]
        assert float(fields[3]) == pytest.approx(turn["start"], abs=1e-3)
        assert float(fields[4]) == pytest.approx(turn["end"] - turn["start"], abs=2e-3)
        assert fields[7] == names[turn["speaker"]].replace(" ", "_")
    assert review.errors == [] and review.outside == []


def test_a_window_of_the_timeline_follows_playback(review: Review) -> None:
    page, segments = review.page, review.doc["segments"]
    page.select_option("#zoom", "15")
    last = len(segments) - 1
    page.click(f"#segments tbody tr[data-index='{last}'] td.text")
    review.pause()
    ticks = page.locator("#axis .tick").all_inner_texts()
    assert ticks[0] != "0:00"  # the view moved to where the playback is
    hidden = page.locator("#speakers .turn[hidden]").count()
    assert hidden >= 1  # turns before the window are not drawn in it
    page.select_option("#zoom", "0")
    assert page.locator("#axis .tick").first.inner_text() == "0:00"
    assert page.locator("#speakers .turn[hidden]").count() == 0


# ------------------------------------------------------------------ transcripts opened from disk


def long_doc(n: int) -> dict:
    segments = [
        {
            "id": i,
            "start": float(i),
            "end": i + 0.8,
            "text": f" Line number {i}.",
            "speaker": f"SPEAKER_0{i % 2}",
        }
        for i in range(n)
    ]
    return {"file": "long.wav", "language": "en", "duration": float(n), "text": "", "segments": segments}


@pytest.fixture(scope="module")
def silent_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("review-page") / "long.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "80", "-c:a", "pcm_s16le", str(out))
    return out


def test_an_opened_transcript_plays_its_chosen_recording_and_keeps_the_line_in_view(
    main_server: Server, browser, tmp_path: Path, silent_wav: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors, outside = watch(page, main_server)
    page.goto(main_server.url + "/")
    doc_path = tmp_path / "long.json"
    doc_path.write_text(json.dumps(long_doc(80)))
    page.set_input_files("#open-doc", str(doc_path))
    page.locator("#status").filter(has_text="Opened long.json").wait_for()
    # Without its recording, a click says what is missing instead of playing.
    page.click("#segments tbody tr[data-index='3'] td.text")
    assert "choose its audio file" in page.inner_text("#status")
    page.set_input_files("#open-audio", str(silent_wav))
    page.locator("#status").filter(has_text="Recording long.wav ready").wait_for()
    page.click("#summary")
    scrolled = page.evaluate("() => window.scrollY")
    for _ in range(60):
        page.keyboard.press("ArrowDown")
    row = page.locator("#segments tr.playing")
    assert row.get_attribute("data-index") == "63"
    t = page.evaluate("() => document.getElementById('player').currentTime")
    assert 63.0 - 0.01 <= t < 63.8
    box = page.locator("#lines").bounding_box()
    line = row.bounding_box()
    assert box["y"] <= line["y"] and line["y"] + line["height"] <= box["y"] + box["height"]  # in view
    assert page.evaluate("() => document.getElementById('lines').scrollTop") > 0
    assert page.evaluate("() => window.scrollY") == scrolled  # the lines' box scrolled, not the page
    page.evaluate("() => document.getElementById('player').pause()")
    assert errors == [] and outside == []
    page.close()


def test_why_not_for_speakers_and_prosody_of_an_opened_transcript(
    main_server: Server, browser, tmp_path: Path
) -> None:
    page = browser.new_page()
    errors, outside = watch(page, main_server)
    page.goto(main_server.url + "/")
    doc = long_doc(4)
    for seg in doc["segments"]:
        del seg["speaker"]
    doc["meta"] = {"diarization": {"status": "failed", "error": "diarization crashed: out of memory"}}
    error = "prosody: analysis failed: RuntimeError('no audio')"
    for seg in doc["segments"]:
        seg["audio_state"] = {
            "prosody": None,
            "emotion": None,
            "rendering": None,
            "status": {"prosody": "failed", "emotion": "skipped", "errors": [error]},
        }
    path = tmp_path / "failed.json"
    path.write_text(json.dumps(doc))
    page.set_input_files("#open-doc", str(path))
    page.locator("#status").filter(has_text="Opened failed.json").wait_for()
    notes = page.locator("#why-not")
    assert "Speakers: failed: diarization crashed: out of memory" in notes.inner_text()
    assert f"Prosody (pitch, energy, rate, pauses): {error}" in notes.inner_text()
    assert page.locator("#segments td.pitch").first.get_attribute("title") == error
    assert page.is_disabled("#exports button[data-format='rttm']")  # no turns to list
    assert "No prosody" in page.inner_text("#legend")

    # A transcript from Stage 1 alone: nothing enriched, no speakers asked for.
    plain = long_doc(2)
    for seg in plain["segments"]:
        del seg["speaker"]
    path.write_text(json.dumps(plain))
    page.set_input_files("#open-doc", [])
    page.set_input_files("#open-doc", str(path))
    page.locator("#why-not li[data-feature='speakers']").filter(has_text="not asked for").wait_for()
    assert "Stage 2 did not run" in page.inner_text("#why-not li[data-feature='prosody']")
    assert errors == [] and outside == []
    page.close()


def test_phone_width_fits_without_sideways_scrolling(
    review: Review, main_server: Server, browser, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(main_server.url + "/")
    doc_path = tmp_path / "review-phone.json"
    doc_path.write_text(json.dumps(review.doc))
    page.set_input_files("#open-doc", str(doc_path))
    page.locator("#status").filter(has_text="Opened").wait_for()
    width = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert width[0] <= width[1], width
    assert page.locator("#speakers .speaker-lane").count() == 2
    assert page.is_visible("#segments td.text")
    page.close()

"""The page's live mode and speaker view in headless Chromium (Debian's `chromium`, driven by Playwright),
against the shared real server.

Live mode: Chromium's fake microphone plays jfk.flac (converted to WAV) in real time; the page streams it
to /v1/realtime. Every event the page receives is recorded with the state of its item's line right after
the page handled it, so the test checks the view against the stream itself: the stable words are the
deltas appended, the tail is the event's tail (shown apart, replaced by the next), the completed
transcript replaces the line, items go into their turn's group in order, and every completed item is a bar
on the live lane. The same rules are then checked on a session laid out as docs/service.md describes it
(tails, several items in one turn, a session longer than the lane's first scale), fed to the page's event
handler, which the server shipping in this branch may not produce with one short recording. Speakers: a
transcript document with speakers, opened in the page, shows each speaker's lines in its own colour, and
renaming a speaker renames every one of its lines.
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
from service_support import JFK, Server

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]
main_server = support.main_server  # the shared server fixture

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


LJSPEECH = DATA / "en_read" / "ljspeech"


def microphone(out: Path, *sources: Path) -> Path:
    """The sources one after another, each after 1 s of silence (the page opens its connection after the
    microphone, so the very start of the file is not sent), as 48 kHz 16-bit WAV, then 3 s of silence (the
    end of the last turn)."""
    inputs = [arg for src in sources for arg in ("-i", str(src))]
    chain = "".join(
        f"[{i}:a]aformat=sample_rates=48000:channel_layouts=mono,adelay=1000:all=1[a{i}];"
        for i in range(len(sources))
    )
    joined = "".join(f"[a{i}]" for i in range(len(sources)))
    graph = f"{chain}{joined}concat=n={len(sources)}:v=0:a=1,apad=pad_dur=3[out]"
    ffmpeg(*inputs, "-filter_complex", graph, "-map", "[out]", "-c:a", "pcm_s16le", str(out))
    return out


@pytest.fixture(scope="module")
def playwright() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (Debian package 'chromium')")
    with playwright_api.sync_playwright() as p:
        yield p


def launch(playwright, microphone_wav: Path):
    return playwright.chromium.launch(
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


@pytest.fixture(scope="module")
def browser(playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A browser whose microphone says jfk (11 s: four short turns)."""
    browser = launch(playwright, microphone(tmp_path_factory.mktemp("live-page") / "jfk.wav", JFK))
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def reading_browser(playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A browser whose microphone reads two long LJSpeech sentences (9.7 s each, no pause of half a second
    within them): each is one turn the server commits in several items."""
    wav = microphone(
        tmp_path_factory.mktemp("live-page") / "reading.wav",
        LJSPEECH / "LJ001-0001.wav",
        LJSPEECH / "LJ001-0003.wav",
    )
    browser = launch(playwright, wav)
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


# Records each server event with its item's line as the page left it (the page's own listener runs first).
RECORD_EVENTS = """
window.liveLog = [];
const NativeSocket = window.WebSocket;
function lineState(event) {
  const row = event.item_id ? document.querySelector(`#live-lines tr[data-item="${event.item_id}"]`) : null;
  if (!row) return null;
  const part = (cls) => { const el = row.querySelector(cls); return el ? el.textContent : null; };
  const groups = [...document.querySelectorAll("#live-lines tbody")];
  return { cls: row.className, stable: part(".stable"), tail: part(".tail"), text: part("td.text"),
           group: groups.indexOf(row.parentElement), index: [...row.parentElement.rows].indexOf(row) };
}
window.WebSocket = class extends NativeSocket {
  addEventListener(type, listener, options) {
    if (type !== "message") return super.addEventListener(type, listener, options);
    return super.addEventListener(type, (message) => {
      listener(message);
      const event = JSON.parse(message.data);
      window.liveLog.push({ event, line: lineState(event) });
    }, options);
  }
};
"""

ITEM_EVENTS = ("speech_started", "speech_stopped", ".committed", ".delta", ".completed", ".failed")


def check_lines_follow_events(log: list[dict]) -> dict[str, list[dict]]:
    """The view against the stream, event by event; returns each item's events."""
    items: dict[str, list[dict]] = {}
    turn_of: dict[str, int] = {}
    turns = -1
    for entry in log:
        event, line = entry["event"], entry["line"]
        if not event["type"].endswith(ITEM_EVENTS):
            continue
        item = event["item_id"]
        items.setdefault(item, []).append(event)
        if event["type"] == "input_audio_buffer.speech_started":
            turns += 1
        turn_of.setdefault(item, turns)  # an item without its own speech_started belongs to the open turn
        assert line is not None, event
        assert line["group"] == turn_of[item], (event, line)
        if event["type"].endswith(".delta"):
            stable = "".join(e["delta"] for e in items[item] if e["type"].endswith(".delta"))
            assert line["cls"].startswith("partial") and line["stable"] == stable, (event, line)
            tail = (event.get("slower_whisper") or {}).get("tail")
            if tail is not None:  # the tail shown is this event's, whatever the last one said
                assert line["tail"].strip() == tail.strip(), (event, line)
        if event["type"].endswith(".completed"):
            assert line["cls"] == "final" and line["tail"] is None, (event, line)
            assert line["text"] == event["transcript"].strip(), (event, line)
    return items


class Session:
    """A live session of the page's microphone, run to its last words and stopped: the page, and every
    event it received with its line's state right after."""

    def __init__(self, browser, server: Server, last_words: str) -> None:
        self.context = browser.new_context(permissions=["microphone"])
        page = self.page = self.context.new_page()
        page.add_init_script(RECORD_EVENTS)
        self.errors, self.outside = watch(page, server)
        page.goto(server.url + "/")
        page.fill("#apikey", server.api_key or "")
        page.check("#enrich")
        page.click("#live-start")
        page.locator("#live-status").filter(has_text="Listening").wait_for(timeout=30_000)
        # Final lines as the turns end (the partial text before them is checked in the log: a delta and
        # its completion can come in the same instant on a busy machine).
        page.locator("#live-lines tr.final").filter(has_text=re.compile(last_words, re.I)).wait_for(
            timeout=90_000
        )
        page.click("#live-stop")
        page.locator("#live-status").filter(has_text="Stopped").wait_for()
        self.log = page.evaluate("() => window.liveLog")
        self.items = check_lines_follow_events(self.log)
        self.completed = [e for e in (x["event"] for x in self.log) if e["type"].endswith(".completed")]

    def groups(self) -> list[list[str]]:
        return self.page.evaluate(
            "() => [...document.querySelectorAll('#live-lines tbody')]"
            ".map(g => [...g.rows].map(r => r.dataset.item))"
        )

    def text(self) -> str:
        return " ".join(self.page.locator("#live-lines tr.final td.text").all_text_contents()).lower()

    def check_view(self, audio_s: float) -> None:
        """Every line final, in the order the items completed, a group per turn, prosody and times filled
        in, and one bar per item on the lane at the item's time."""
        page, completed = self.page, self.completed
        assert completed and any(
            e["type"].endswith(".delta") and e["delta"].strip() for es in self.items.values() for e in es
        )
        finals = page.locator("#live-lines tr.final")
        assert [r.get_attribute("data-item") for r in page.locator("#live-lines tbody tr").all()] == [
            e["item_id"] for e in completed
        ]
        starts = sum(1 for x in self.log if x["event"]["type"] == "input_audio_buffer.speech_started")
        assert len(self.groups()) == starts >= 1
        # Prosody filled in on the final lines (the session asked for it with the checkbox).
        pitches = [
            float(t) for t in page.locator("#live-lines tr.final td.pitch").all_text_contents() if t != "–"
        ]
        assert pitches and all(60 <= p <= 400 for p in pitches), pitches
        assert all(t.strip() for t in page.locator("#live-lines tr.final td.time").all_text_contents())
        bars = page.locator("#live-track .turn")
        assert bars.count() == finals.count() == len(completed)
        spans = [
            (float(b.get_attribute("data-start")), float(b.get_attribute("data-end"))) for b in bars.all()
        ]
        rows = [
            (float(r.get_attribute("data-start")), float(r.get_attribute("data-end"))) for r in finals.all()
        ]
        assert spans == rows
        assert all(0 <= a < b <= audio_s for a, b in spans) and spans == sorted(spans), spans
        assert all(b1 <= a2 + 0.05 for (_, b1), (a2, _) in zip(spans, spans[1:], strict=False)), spans
        assert self.errors == [] and self.outside == []

    def close(self) -> None:
        self.context.close()


def test_live_mode_streams_the_microphone(main_server: Server, browser) -> None:
    session = Session(browser, main_server, r"for your country")
    session.check_view(audio_s=15.5)
    for words in ("fellow american", "ask not", "what your country can do for you"):
        assert words in session.text(), session.text()
    # Every tail the server sent was shown after the stable words and replaced by the next (checked in the
    # log; how many come depends on how many decodes the busy machine makes, so their number is not).
    session.close()


def test_live_mode_commits_a_long_turn_in_several_items(main_server: Server, reading_browser) -> None:
    session = Session(reading_browser, main_server, r"similar process")
    session.check_view(audio_s=25.0)
    text = session.text()
    for words in ("printing", "exhibition", "chinese", "similar process"):
        assert words in text, text
    # A read sentence of 9.7 s is committed in more than one item within its turn, all in one group, in
    # order; only the turn's last item ends it.
    groups = session.groups()
    assert any(len(g) >= 2 for g in groups), groups
    end_of_turn = {e["item_id"]: e["slower_whisper"]["end_of_turn"] for e in session.completed}
    for group in groups:
        assert [end_of_turn[i] for i in group] == [False] * (len(group) - 1) + [True], (groups, end_of_turn)
    session.close()


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def delta(item: str, stable: str, tail: str | None) -> dict:
    event = {"type": "conversation.item.input_audio_transcription.delta", "item_id": item, "delta": stable}
    if tail is not None:
        event["slower_whisper"] = {"tail": tail}
    return event


def completed(
    item: str, transcript: str, span: tuple[float, float] | None, end_of_turn: bool, seconds: float
):
    extra: dict = {"language": "en"}
    if span is not None:  # the server of docs/service.md; the older one sent no times
        extra |= {"start_ms": ms(span[0]), "end_ms": ms(span[1]), "end_of_turn": end_of_turn}
        prosody = {"pitch": {"mean_hz": 180.0}, "energy": {"rms_db": -21.5}}
        extra["audio_state"] = {"prosody": prosody, "rendering": "[audio: high pitch]"}
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item,
        "transcript": transcript,
        "usage": {"type": "duration", "seconds": seconds},
        "slower_whisper": extra,
    }


def event(kind: str, item: str, **fields) -> dict:
    return {"type": f"input_audio_buffer.{kind}", "item_id": item, **fields}


def test_live_view_shows_tails_items_and_turns(main_server: Server, browser) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, outside = watch(page, main_server)
    page.goto(main_server.url + "/")
    page.evaluate("() => { document.getElementById('live').hidden = false; resetLiveView(); }")

    def send(*events: dict) -> None:
        for e in events:
            page.evaluate("(e) => onEvent(e)", e)

    def line(item: str) -> dict:
        return page.evaluate(
            """(id) => { const r = document.querySelector(`#live-lines tr[data-item="${id}"]`);
                const t = r.querySelector('.tail'); const s = r.querySelector('.stable');
                return { cls: r.className, stable: s && s.textContent, tail: t && t.textContent,
                         text: r.querySelector('td.text').textContent, time: r.cells[0].textContent,
                         pitch: r.querySelector('td.pitch').textContent,
                         how: r.querySelector('td.how').textContent,
                         tailStyle: t && [getComputedStyle(t).fontStyle, getComputedStyle(t).color],
                         stableStyle: s && [getComputedStyle(s).fontStyle, getComputedStyle(s).color] }; }""",
            item,
        )

    # Turn 1, item A: stable words then a tail, shown apart; the next event's tail replaces it.
    send(event("speech_started", "A", audio_start_ms=0), delta("A", "Hello", "there wor"))
    a = line("A")
    assert (a["stable"], a["tail"].strip(), a["cls"]) == ("Hello", "there wor", "partial")
    assert a["tailStyle"] != a["stableStyle"] and a["tailStyle"][0] == "italic"
    send(delta("A", " there", "world."))
    a = line("A")
    assert (a["stable"], a["tail"].strip()) == ("Hello there", "world.") and "wor " not in a["text"]
    # A is committed mid-turn; item B of the same turn starts with no speech_started of its own, and
    # its words come while A's final is still awaited.
    send(event("committed", "A", previous_item_id=None), delta("B", "How", "are yo"))
    assert line("A")["cls"] == "partial committed" and line("B")["stable"] == "How"
    send(completed("A", " Hello there, world.", (0.0, 1.8), False, 1.8))
    a = line("A")
    assert (a["cls"], a["text"], a["tail"], a["time"]) == (
        "final",
        "Hello there, world.",
        None,
        "0:00.0–0:01.8",
    )
    assert a["pitch"] == "180" and a["how"] == "[audio: high pitch]"
    page.evaluate("() => { window.rowA = document.querySelector('#live-lines tr[data-item=\"A\"]'); }")
    send(delta("B", " are you", ""), event("speech_stopped", "B", audio_end_ms=3500))
    assert line("B")["tail"] == "" and line("B")["stable"] == "How are you"
    send(
        event("committed", "B", previous_item_id="A"), completed("B", " How are you?", (2.0, 3.5), True, 1.5)
    )
    # Rows already final are not built again when later items change.
    assert page.evaluate("() => window.rowA === document.querySelector('#live-lines tr[data-item=\"A\"]')")

    # Turn 2 starts past the lane's first minute: the lane's scale steps up, its bars are laid out again.
    send(event("speech_started", "C", audio_start_ms=65000), delta("C", "Fine", "thanks"))
    send(event("speech_stopped", "C", audio_end_ms=66500), event("committed", "C", previous_item_id="B"))
    send(completed("C", " Fine, thanks.", (65.0, 66.5), True, 1.5))
    # Turn 3 as the older server sends it: no tail, no times in completed (those of speech_started/stopped).
    send(
        event("speech_started", "D", audio_start_ms=70000),
        delta("D", "Good", None),
        delta("D", " to hear", None),
    )
    assert line("D")["tail"] == "" and line("D")["stable"] == "Good to hear"
    send(event("speech_stopped", "D", audio_end_ms=71000), event("committed", "D", previous_item_id="C"))
    send(completed("D", " Good to hear.", None, True, 1.0))
    assert line("D")["time"] == "1:10.0–1:11.0" and line("D")["text"] == "Good to hear."

    groups = page.evaluate(
        "() => [...document.querySelectorAll('#live-lines tbody')]"
        ".map(g => [...g.rows].map(r => r.dataset.item))"
    )
    assert groups == [["A", "B"], ["C"], ["D"]]
    assert (
        page.locator("#live-lines tr.partial").count() == 0 and page.locator("#live-lines .tail").count() == 0
    )
    bars = page.evaluate(
        "() => [...document.querySelectorAll('#live-track .turn')].map(b => [b.style.left, b.style.width])"
    )
    span = 120  # the lane's second scale
    want = [(0.0, 1.8), (2.0, 3.5), (65.0, 66.5), (70.0, 71.0)]
    assert len(bars) == len(want)
    for (left, width), (a0, a1) in zip(bars, want, strict=True):
        assert float(left.rstrip("%")) == pytest.approx(100 * a0 / span, abs=0.01)
        assert float(width.rstrip("%")) == pytest.approx(100 * (a1 - a0) / span, abs=0.01)
    assert page.inner_text("#live-axis").split()[-1] == "2:00"
    assert "5.8 s" in page.inner_text("#live-lane")

    # A failed item says so in its line.
    send(event("speech_started", "E", audio_start_ms=80000))
    failed = {"type": "conversation.item.input_audio_transcription.failed", "item_id": "E"}
    send(failed | {"error": {"message": "no model"}})
    assert line("E")["cls"] == "failed" and "no model" in line("E")["text"]

    # The lines box follows the newest line, and stays where the reader scrolled to.
    box = "document.getElementById('live-box')"
    frames = "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(r, 50))))"
    gap = "b.scrollHeight - b.scrollTop - b.clientHeight"
    at_end = f"async () => {{ await {frames}; const b = {box}; return {gap}; }}"

    for n in range(40):
        item, t = f"F{n}", 90.0 + 2 * n
        send(event("speech_started", item, audio_start_ms=ms(t)), delta(item, f"Line {n}", "and more"))
        send(completed(item, f" Line {n} said.", (t, t + 1.5), True, 1.5))
    assert page.evaluate(f"() => {box}.scrollHeight > 2 * {box}.clientHeight")
    assert page.evaluate(at_end) < 40
    page.evaluate(f"() => {{ {box}.scrollTop = 0; }}")
    page.evaluate(f"async () => {{ await {frames}; }}")
    send(event("speech_started", "G", audio_start_ms=ms(180)), delta("G", "Later", "words"))
    page.evaluate(f"async () => {{ await {frames}; }}")
    assert page.evaluate(f"() => {box}.scrollTop") == 0
    page.evaluate(f"() => {{ {box}.scrollTop = {box}.scrollHeight; }}")
    page.evaluate(f"async () => {{ await {frames}; }}")
    send(
        completed("G", " Later words.", (180.0, 181.0), True, 1.0),
        event("speech_started", "H", audio_start_ms=ms(185)),
    )
    assert page.evaluate(at_end) < 40

    # At a phone's width the live lines fit without sideways scrolling.
    page.set_viewport_size({"width": 390, "height": 844})
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths
    assert errors == [] and outside == []
    page.close()


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


def test_page_scripts_share_no_top_level_name() -> None:
    """The page's classic scripts share one scope: a second `function keepInView` would silently replace
    the first (it did once, and the review view's follow broke)."""
    static = Path(support.__file__).resolve().parents[1] / "transcription" / "service" / "static"
    scripts = re.findall(r'<script src="/static/([\w.-]+)"', (static / "index.html").read_text())
    declared = re.compile(r"^(?:async function|function|const|let|class) ([\w$]+)", re.M)
    seen: dict[str, str] = {}
    for script in scripts:
        for name in declared.findall((static / script).read_text()):
            assert name not in seen, f"{name} is declared in {seen[name]} and {script}"
            seen[name] = script
    assert "showLiveEvent" in seen and "segmentRow" in seen and "live.js" in scripts

"""The review page's weight and speed on a 2-hour transcript, in headless Chromium; the contour's size.

1. Real conversations (Harper Valley calls and pyannote's two-speaker sample) are transcribed by the CLI with
   speakers (2) and Stage 2 prosody (tiny.en, CPU, no emotion).
2. Those documents are laid end to end, again and again, into one 2-hour transcript (times shifted, turns
   and speakers kept), so its density of lines, words, turns and contour values is that of real calls.
3. The page (served by a small static server with the service's content security policy) opens it with a
   silent 2-hour recording: the time until the page has drawn it, then playback across lines (frame gaps,
   long tasks), a speaker rename, a zoom change, a JSON export.
4. The same transcript as a 2-hour live session (the events of docs/service.md: stable words, tails, commits,
   completions with prosody) fed to the live view's event handler, 10 events per frame: the time each event
   takes and the gaps between frames, in the first and the last tenth of the session.

Also: the page's weight (bytes of its files, raw and gzipped) and what the contour costs per hour of speech
(the document with and without contours, as written to whisper_json/, as it was written before number
arrays went on one line, and compact as the service sends it). `--screenshots` saves docs/page-desktop.png
and docs/page-phone.png of the sample, and docs/page-live-desktop.png and -phone.png of a live session.

    python benchmarks/bench_page.py [--hours 2] [--repeats 3] [--screenshots] [--out results/page.json]
        [--transcripts ROOT/whisper_json]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from common import server_env  # noqa: E402

from transcription import writers  # noqa: E402
from transcription.service.headers import PAGE_POLICY  # noqa: E402

DATA = Path(os.environ.get("SLOWER_WHISPER_TEST_DATA") or REPO.parent / "shared" / "data")
STATIC = REPO / "transcription" / "service" / "static"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SAMPLE = DATA / "multi_speaker" / "pyannote_sample" / "sample.wav"
CALLS = sorted((DATA / "conversations" / "harper_valley").glob("*.wav"))


def transcribe(root: Path) -> list[dict]:
    raw = root / "raw_audio"
    raw.mkdir(parents=True)
    for wav in [SAMPLE, *CALLS]:
        shutil.copy(wav, raw / wav.name)
    env = server_env("tiny.en", "cpu") | {"WHISPER_COMPUTE_TYPE": "int8", "ENABLE_EMOTION": "false"}
    args = ["transcribe", "--root", str(root), "--diarize", "--num-speakers", "2", "--enrich"]
    subprocess.run([sys.executable, "-m", "transcription", *args], cwd=REPO, env=env, check=True)
    return [json.loads((root / "whisper_json" / f"{w.stem}.json").read_text()) for w in [SAMPLE, *CALLS]]


def reuse(folder: Path) -> list[dict]:
    """Step 1's documents from an earlier run (`--root`'s whisper_json/), in the order step 1 makes them."""
    paths = [folder / f"{w.stem}.json" for w in [SAMPLE, *CALLS]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"{folder} lacks {', '.join(missing)}: run without --transcripts")
    return [json.loads(p.read_text()) for p in paths]


def tile(docs: list[dict], seconds: float) -> dict:
    """The documents end to end until `seconds` of audio, as one transcript of two speakers."""
    out = copy.deepcopy(docs[0])
    out.update(file="two-hours.wav", segments=[], turns=[], text="")
    offset, n = 0.0, 0
    while offset < seconds:
        doc = docs[n % len(docs)]
        n += 1
        for seg in doc["segments"]:
            seg = copy.deepcopy(seg)
            seg["id"] = len(out["segments"])
            seg["start"] = round(seg["start"] + offset, 3)
            seg["end"] = round(seg["end"] + offset, 3)
            for w in seg["words"]:
                w["start"] = round(w["start"] + offset, 3)
                w["end"] = round(w["end"] + offset, 3)
            out["segments"].append(seg)
        for t in doc.get("turns", []):
            out["turns"].append(
                {**t, "start": round(t["start"] + offset, 3), "end": round(t["end"] + offset, 3)}
            )
        offset += doc["duration"]
    out["duration"] = round(offset, 3)
    ids = list(dict.fromkeys(t["speaker"] for t in out["turns"]))
    out["speakers"] = [{"id": s, "total_s": round(_union(out["turns"], s), 3)} for s in ids]
    return out


def _union(turns: list[dict], speaker: str) -> float:
    total, reach = 0.0, 0.0
    for t in sorted((t for t in turns if t["speaker"] == speaker), key=lambda t: t["start"]):
        start = max(t["start"], reach)
        total += max(0.0, t["end"] - start)
        reach = max(reach, t["end"])
    return total


def contour_cost(docs: list[dict]) -> dict:
    """Bytes the contours add per hour of speech (segment time) and per hour of audio."""
    speech = sum(s["end"] - s["start"] for d in docs for s in d["segments"]) / 3600
    audio = sum(d["duration"] for d in docs) / 3600
    bare = copy.deepcopy(docs)
    for d in bare:
        for s in d["segments"]:
            (s.get("audio_state") or {}).get("prosody", {}).pop("contour", None)
    out = {"speech_hours": round(speech, 4), "audio_hours": round(audio, 4)}
    for name, dump in (
        ("written", lambda d: writers.render(d, "json")),  # whisper_json/: number arrays on one line
        ("indent2", lambda d: json.dumps(d, ensure_ascii=False, indent=2)),  # one value per line, as before
        ("compact", lambda d: json.dumps(d, ensure_ascii=False, separators=(",", ":"))),
    ):
        with_c = sum(len(dump(d).encode()) for d in docs)
        without = sum(len(dump(d).encode()) for d in bare)
        out[name] = {
            "document_bytes_per_speech_hour": round(with_c / speech),
            "without_contour_bytes_per_speech_hour": round(without / speech),
            "contour_bytes_per_speech_hour": round((with_c - without) / speech),
            "contour_share_of_document": round((with_c - without) / with_c, 3),
        }
    return out


def page_weight() -> dict:
    files = sorted(p for p in STATIC.iterdir() if p.is_file())
    raw = {p.name: p.stat().st_size for p in files}
    return {
        "files": raw,
        "bytes": sum(raw.values()),
        "gzip_bytes": sum(len(gzip.compress(p.read_bytes(), 9)) for p in files),
    }


class StaticPage(http.server.SimpleHTTPRequestHandler):
    """`/` and `/static/*` as the service serves them, with its page policy."""

    def translate_path(self, path: str) -> str:
        name = path.split("?", 1)[0]
        name = "index.html" if name == "/" else name.removeprefix("/static/")
        return str(STATIC / Path(name).name)

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", PAGE_POLICY)
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


def serve() -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StaticPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


FRAMES_JS = """async (ms) => {
  const gaps = []; const longTasks = [];
  const obs = new PerformanceObserver((l) => l.getEntries().forEach((e) => longTasks.push(e.duration)));
  obs.observe({type: 'longtask', buffered: false});
  let last = performance.now(); const end = last + ms;
  await new Promise((done) => { const f = (now) => { gaps.push(now - last); last = now;
    if (now < end) requestAnimationFrame(f); else done(); }; requestAnimationFrame(f); });
  obs.disconnect();
  gaps.sort((a, b) => a - b);
  return {frames: gaps.length, median_gap_ms: gaps[gaps.length >> 1], max_gap_ms: gaps[gaps.length - 1],
          long_tasks: longTasks.length, longest_task_ms: Math.max(0, ...longTasks)};
}"""
NEXT_FRAME = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"


def measure_render(browser, url: str, doc_path: Path, audio_path: Path) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    started = time.perf_counter()
    page.set_input_files("#open-doc", str(doc_path))
    page.locator("#status").filter(has_text="Opened").wait_for(timeout=120_000)
    page.evaluate(NEXT_FRAME)
    rendered = time.perf_counter() - started
    page.set_input_files("#open-audio", str(audio_path))
    page.click("#segments tbody tr:nth-child(400) td.text")
    playback = page.evaluate(FRAMES_JS, 5000)
    page.evaluate("() => document.getElementById('player').pause()")
    out = {"open_and_draw_s": round(rendered, 3), "playback_5s": playback}
    for name, action in (
        ("rename_s", lambda: page.fill("input.speaker-name[data-speaker='SPEAKER_01']", "Caller")),
        ("zoom_to_1_min_s", lambda: page.select_option("#zoom", "60")),
        ("zoom_to_all_s", lambda: page.select_option("#zoom", "0")),
    ):
        started = time.perf_counter()
        action()
        page.evaluate(NEXT_FRAME)
        out[name] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    with page.expect_download() as info:
        page.click("#exports button[data-format='json']")
    info.value.path()
    out["export_json_s"] = round(time.perf_counter() - started, 3)
    out["rows"] = page.locator("#segments tbody tr").count()
    out["errors"] = errors
    page.close()
    return out


def live_session(doc: dict) -> list[dict]:
    """The transcript as /v1/realtime sends a session (docs/service.md): a turn per run of one speaker's
    lines, an item per line, its words as deltas two at a time with the next three as the tail, then the
    item's commit and its completion with its times and Stage 2 state."""
    events: list[dict] = []
    segments = doc["segments"]
    for n, seg in enumerate(segments):
        item = f"item_{seg['id']}"
        if n == 0 or seg.get("speaker") != segments[n - 1].get("speaker"):
            events.append(
                {
                    "type": "input_audio_buffer.speech_started",
                    "item_id": item,
                    "audio_start_ms": _ms(seg["start"]),
                }
            )
        words = [w["word"] for w in seg["words"]] or seg["text"].split()
        for i in range(0, len(words), 2):
            events.append(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item,
                    "delta": "".join(words[i : i + 2]),
                    "slower_whisper": {"tail": "".join(words[i + 2 : i + 5])},
                }
            )
        events.append({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": None})
        last = n + 1 == len(segments) or segments[n + 1].get("speaker") != seg.get("speaker")
        extra = {"start_ms": _ms(seg["start"]), "end_ms": _ms(seg["end"]), "end_of_turn": last}
        if seg.get("audio_state"):
            extra["audio_state"] = seg["audio_state"]
        events.append(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "transcript": seg["text"],
                "usage": {"type": "duration", "seconds": round(seg["end"] - seg["start"], 3)},
                "slower_whisper": extra,
            }
        )
    return events


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


# The session fed to the page's event handler, a fixed number of events per animation frame: the time each
# event's handling takes and the gaps between frames (handling, style, layout and paint), early and late.
LIVE_JS = """async ([events, perFrame]) => {
  document.getElementById('live').hidden = false;
  resetLiveView();
  const handle = [], gaps = [];
  let i = 0, last = performance.now();
  await new Promise((done) => { const f = (now) => { gaps.push(now - last); last = now;
    for (const stop = i + perFrame; i < events.length && i < stop; i++) {
      const t = performance.now(); onEvent(events[i]); handle.push(performance.now() - t); }
    if (i < events.length) requestAnimationFrame(f); else done(); }; requestAnimationFrame(f); });
  const stats = (xs) => { const s = [...xs].sort((a, b) => a - b);
    return {median_ms: s[s.length >> 1], p99_ms: s[Math.floor(0.99 * (s.length - 1))],
            max_ms: s[s.length - 1]}; };
  const tenth = (xs, late) => { const n = Math.max(1, Math.floor(xs.length / 10));
    return late ? xs.slice(xs.length - n) : xs.slice(1, n + 1); };
  for (let n = 0; n < 5; n++) await new Promise((r) => requestAnimationFrame(r));
  const box = document.getElementById('live-box');
  return {events: events.length, frames: gaps.length,
    event_first_10pct: stats(tenth(handle, false)), event_last_10pct: stats(tenth(handle, true)),
    frame_first_10pct: stats(tenth(gaps, false)), frame_last_10pct: stats(tenth(gaps, true)),
    rows: document.querySelectorAll('#live-lines tbody tr').length,
    turns: document.querySelectorAll('#live-lines tbody').length,
    bars: document.querySelectorAll('#live-track .turn').length,
    at_end: box.scrollHeight - box.scrollTop - box.clientHeight < 40, following: liveView.following};
}"""


def measure_live(browser, url: str, events: list[dict], per_frame: int = 10) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    out = page.evaluate(LIVE_JS, [events, per_frame])
    out |= {"events_per_frame": per_frame, "errors": errors}
    page.close()
    return out


def screenshots(browser, url: str, doc_path: Path, audio: Path) -> None:
    for name, viewport in (
        ("desktop", {"width": 1200, "height": 1000}),
        ("phone", {"width": 390, "height": 1100}),
    ):
        page = browser.new_page(viewport=viewport, device_scale_factor=1)
        page.goto(url)
        page.set_input_files("#open-doc", str(doc_path))
        page.locator("#status").filter(has_text="Opened").wait_for()
        page.set_input_files("#open-audio", str(audio))
        page.fill("input.speaker-name[data-speaker='SPEAKER_00']", "Diane")
        page.fill("input.speaker-name[data-speaker='SPEAKER_01']", "Sheila")
        page.click("#segments tbody tr:nth-child(3) td.text")
        page.evaluate("() => document.getElementById('player').pause()")
        page.locator("#result").scroll_into_view_if_needed()
        path = REPO / "docs" / f"page-{name}.png"
        page.screenshot(path=str(path))
        _shrink(path)
        page.close()


def live_screenshots(browser, url: str, events: list[dict]) -> None:
    """The live view part-way through a session: its first lines final, the last one still being spoken
    (its stable words, then its tail)."""
    minute = next(i for i, e in enumerate(events) if e.get("audio_start_ms", 0) > 50_000)
    with_tail = [i for i, e in enumerate(events[:minute]) if (e.get("slower_whisper") or {}).get("tail")]
    shown = events[: with_tail[-1] + 1]
    for name, viewport in (
        ("desktop", {"width": 1200, "height": 900}),
        ("phone", {"width": 390, "height": 900}),
    ):
        page = browser.new_page(viewport=viewport, device_scale_factor=1)
        page.goto(url)
        page.evaluate(
            "(events) => { document.getElementById('live').hidden = false; resetLiveView();"
            " setLiveStatus('Listening…'); events.forEach(onEvent); }",
            shown,
        )
        for _ in range(3):  # the lines box follows the newest line within a few frames
            page.evaluate(NEXT_FRAME)
        path = REPO / "docs" / f"page-live-{name}.png"
        page.locator("#live").screenshot(path=str(path))
        _shrink(path)
        page.close()


def _shrink(path: Path) -> None:
    """A palette of 64 colours: a screenshot of text and flat colours loses nothing visible."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--screenshots", action="store_true")
    parser.add_argument("--transcripts", type=Path, help="a whisper_json/ folder of step 1, to reuse")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "page.json")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        docs = reuse(args.transcripts) if args.transcripts else transcribe(tmp / "root")
        long = tile(docs, args.hours * 3600)
        doc_path = tmp / "two-hours.json"
        doc_path.write_text(writers.render(long, "json"))
        audio = tmp / "two-hours.wav"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=8000:cl=mono",
                "-t",
                str(long["duration"]),
                "-c:a",
                "pcm_u8",
                str(audio),
            ],
            check=True,
        )
        sample_path = tmp / "sample.json"
        sample_path.write_text(json.dumps(docs[0]))
        server, url = serve()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=CHROMIUM,
                    headless=True,
                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
                )
                runs = [measure_render(browser, url, doc_path, audio) for _ in range(args.repeats)]
                session = live_session(long)
                live_runs = [measure_live(browser, url, session) for _ in range(args.repeats)]
                if args.screenshots:
                    screenshots(browser, url, sample_path, SAMPLE)
                    live_screenshots(browser, url, session)
                browser.close()
        finally:
            server.shutdown()
        result = {
            "machine": "2 CPU cores shared with other work; Chromium headless, 1280x900",
            "transcript": {
                "duration_s": long["duration"],
                "segments": len(long["segments"]),
                "words": sum(len(s["words"]) for s in long["segments"]),
                "turns": len(long["turns"]),
                "contour_values": sum(
                    len(s["audio_state"]["prosody"]["contour"]["pitch_hz"]) * 2
                    for s in long["segments"]
                    if (s.get("audio_state") or {}).get("prosody")
                    and s["audio_state"]["prosody"].get("contour")
                ),
                "json_bytes": doc_path.stat().st_size,
                "sources": [d["file"] for d in docs],
            },
            "page_weight": page_weight(),
            "contour_cost": contour_cost(docs),
            "runs": runs,
            "live_session": live_runs,
        }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

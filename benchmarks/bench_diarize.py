"""Speakers: how well and how fast the embedded diarizer finds them, on every set of conversations here.

Sets (`../shared/data`, see conversations/SOURCES.md; benchmarks/assemble.py rebuilds the assembled ones):
- `assembled`, `assembled_telephone`: 2-5 real speakers joined from single-speaker clips, as recorded and
  through a telephone channel;
- `ami`: the 10 AMI meeting openings, scored on 0-30 s;
- `calls`: the 6 Harper Valley phone calls (both sides on one 8 kHz line);
- `sample`: pyannote's phone call (sample.rttm);
- `stereo`: the stereo clip (one speaker per channel; no turn reference: method and count only).

Per set, pooled over its recordings: DER with pyannote.metrics at collar 0 and +-0.25 s (overlap scored),
missed speech / false alarm / confusion at each, the speaker-count error per recording, how many reference
speakers a count from 1.6 s windows could see at all (`countable`), how much of the reference speech
no turn covers is no louder than the recording outside speech (`speech_missed_at_floor`), and the time.
cpWER (`meeteval`, installed apart: `pip install meeteval`, which builds with a C compiler) on the calls:
tiny.en's words labelled by our turns against the same words labelled by the reference turns (the
difference is what our labels cost). Speed: a transcription with speakers against
without (tiny.en, CPU). Memory: peak RSS of diarizing a long recording (`--long-minutes`) in a fresh process.

    python benchmarks/bench_diarize.py [--sets ami calls ...] [--long-minutes 120] [--no-speed] [--no-cpwer]

Prints a Markdown table and the results as JSON; writes the JSON to --out with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from assemble import DATA, conversation, long_recording  # noqa: E402

from transcription.audio import WavReader, normalize  # noqa: E402
from transcription.config import Settings  # noqa: E402
from transcription.diarize import WINDOW_S, Constraints, load, window_centres  # noqa: E402
from transcription.diarize.cluster import MIN_WINDOWS  # noqa: E402
from transcription.diarize.speech import speech_regions  # noqa: E402

CONVERSATIONS = DATA / "conversations"
CALL = DATA / "multi_speaker/pyannote_sample"
STEREO = DATA / "multi_speaker/stereo_two_speakers/stereo_diarization.wav"
AMI_SCORED_S = 30.0
SETS = ("assembled", "assembled_telephone", "ami", "calls", "sample", "stereo")
Turns = list[tuple[str, float, float]]


@dataclass
class Recording:
    name: str
    source: Path  # as given (the diarizer reads its channels for stereo calls)
    wav: Path  # normalised 16 kHz mono
    reference: Turns | None


def rttm(path: Path, end: float | None = None) -> Turns:
    out = []
    for line in path.read_text().splitlines():
        p = line.split()
        a, b = float(p[3]), float(p[3]) + float(p[4])
        if end is None or a < end:
            out.append((p[7], a, b if end is None else min(b, end)))
    return out


def recordings(name: str, tmp: Path) -> list[Recording]:
    if name.startswith("assembled"):
        out = []
        for n in (2, 3, 4, 5):
            wav, ref = conversation(n, tmp, narrowband=name == "assembled_telephone")
            out.append(Recording(wav.stem, wav, wav, ref))
        return out
    if name == "ami":
        found = sorted((CONVERSATIONS / "ami_openings").glob("*.wav"))
        pairs = [(w, rttm(w.with_suffix(".rttm"), AMI_SCORED_S)) for w in found]
    elif name == "calls":
        pairs = [
            (w, rttm(w.with_suffix(".rttm"))) for w in sorted((CONVERSATIONS / "harper_valley").glob("*.wav"))
        ]
    elif name == "sample":
        pairs = [(CALL / "sample.wav", rttm(CALL / "sample.rttm"))]
    else:
        pairs = [(STEREO, None)]
    out = []
    for src, ref in pairs:
        wav = tmp / f"{name}-{src.stem}.16k.wav"
        normalize(src, wav)
        out.append(Recording(src.stem, src, wav, ref))
    return out


def _annotation(turns: Turns, uem_end: float | None = None):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for i, (speaker, a, b) in enumerate(turns):
        if uem_end is not None:
            b = min(b, uem_end)
        if b > a:
            ann[Segment(a, b), i] = speaker
    return ann


def countable(wav: Path, reference: Turns) -> int:
    """How many reference speakers a count from windows could see: those who hold at least 70% of the
    reference speech in MIN_WINDOWS or more of the diarizer's own windows wholly inside speech (in dense,
    overlapped speech most windows are mixed; a speaker heard only in mixed or short ones has no group)."""
    held: dict[str, int] = {}
    for start, end in speech_regions(WavReader(wav)):
        if end - start < WINDOW_S:
            continue
        for c in window_centres(start, end):
            cover: dict[str, float] = {}
            for speaker, a, b in reference:
                cover[speaker] = cover.get(speaker, 0.0) + max(
                    0.0, min(b, c + WINDOW_S / 2) - max(a, c - WINDOW_S / 2)
                )
            top = max(cover, key=cover.__getitem__) if cover else None
            if top is not None and cover[top] > 0 and cover[top] >= 0.7 * sum(cover.values()):
                held[top] = held.get(top, 0) + 1
    return sum(n >= MIN_WINDOWS for n in held.values())


def missed_at_floor(wav: Path, reference: Turns, found: Turns, end: float | None) -> tuple[float, float]:
    """Reference speech (10 ms frames, any speaker) outside every found turn, in seconds, and how much of it
    is no louder than the 90th percentile of the recording's frames outside reference speech: a pause inside
    an annotated turn, or speech under the noise, that no VAD threshold or gain can reveal. (0, 0) when the
    reference leaves no 1 s outside speech to measure the floor on."""
    audio = WavReader(wav).read(0.0, end) if end is not None else WavReader(wav).read()
    n = audio.size // 160
    level = 10 * np.log10(np.mean(audio[: n * 160].astype(np.float64).reshape(n, 160) ** 2, axis=1) + 1e-12)

    def frames(turns: Turns) -> np.ndarray:
        on = np.zeros(n, dtype=bool)
        for _, a, b in turns:
            on[int(a * 100) : int(b * 100)] = True
        return on

    ref, hyp = frames(reference), frames(found)
    if (~ref).sum() < 100:
        return 0.0, 0.0
    missed = ref & ~hyp
    floor = np.percentile(level[~ref], 90)
    return float(missed.sum()) / 100, float((missed & (level <= floor)).sum()) / 100


def score_set(diarizer, items: list[Recording], constraints: Constraints, scored_end: float | None) -> dict:
    """DER pooled over the set (the metric accumulates its components), and per recording."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    metrics = {c: DiarizationErrorRate(collar=2 * c, skip_overlap=False) for c in (0.0, 0.25)}
    per, seconds, audio_s = [], 0.0, 0.0
    for rec in items:
        t0 = time.perf_counter()
        result = diarizer.diarize(WavReader(rec.wav), constraints, source=rec.source)
        seconds += time.perf_counter() - t0
        audio_s += WavReader(rec.wav).duration
        row = {"recording": rec.name, "method": result.method, "speakers_found": len(result.speakers())}
        row["warnings"] = result.warnings
        if rec.reference is not None:
            hyp = [(t.speaker, t.start, t.end) for t in result.turns]
            ref_a, hyp_a = _annotation(rec.reference), _annotation(hyp, scored_end)
            for c, m in metrics.items():
                row[f"der_collar_{c}"] = round(float(m(ref_a, hyp_a)), 4)
            row["speakers_ref"] = len({s for s, _, _ in rec.reference})
            row["count_error"] = row["speakers_found"] - row["speakers_ref"]
            row["speakers_countable"] = countable(rec.wav, rec.reference)
            row["speech_missed_s"], row["speech_missed_at_floor_s"] = missed_at_floor(
                rec.wav, rec.reference, hyp, scored_end
            )
        per.append(row)
    out: dict = {"recordings": per, "diarize_s": round(seconds, 2), "audio_s": round(audio_s, 1)}
    if all(r.reference is not None for r in items):
        for c, m in metrics.items():
            out[f"der_collar_{c}"] = round(float(abs(m)), 4)
        for c, suffix in ((0.25, ""), (0.0, "_collar_0")):
            acc = metrics[c].accumulated_
            for key, name in (
                ("missed detection", "missed"),
                ("false alarm", "false_alarm"),
                ("confusion", "confusion"),
            ):
                out[name + suffix] = round(float(acc[key] / acc["total"]), 4)
        errors = [r["count_error"] for r in per]
        out["count_errors"] = errors
        out["count_within_one"] = f"{sum(abs(e) <= 1 for e in errors)}/{len(errors)}"
        out["count_exact"] = f"{sum(e == 0 for e in errors)}/{len(errors)}"
        seen = [r["speakers_found"] - r["speakers_countable"] for r in per]
        out["count_within_one_of_countable"] = f"{sum(abs(e) <= 1 for e in seen)}/{len(seen)}"
        missed = sum(r["speech_missed_s"] for r in per)
        out["speech_missed_at_floor"] = (
            round(sum(r["speech_missed_at_floor_s"] for r in per) / missed, 3) if missed else 0.0
        )
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def cpwer_calls(diarizer, items: list[Recording]) -> dict:
    """tiny.en's words on each call given a speaker by our turns, and by the reference turns, each against
    the human per-speaker transcripts (cpWER, meeteval); pooled over the calls."""
    from meeteval.wer import wer

    from transcription.asr import AsrOptions, Engine
    from transcription.config import load_settings
    from transcription.speakers import _Timeline

    settings = load_settings(
        {}, None, {"WHISPER_MODEL": "tiny.en", "WHISPER_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    )
    engine = Engine.load(settings)
    options = AsrOptions.from_settings(settings)
    totals = {"ours": [0, 0], "reference_turns": [0, 0]}
    per = []
    for rec in items:
        segments = engine.transcribe(WavReader(rec.wav), options).segments
        words = [w for s in segments for w in s.words]
        human: dict[str, list[str]] = {}
        for seg in sorted(
            json.loads(rec.source.with_suffix(".transcript.json").read_text()), key=lambda s: s["start_ms"]
        ):
            human.setdefault(seg["speaker_role"], []).extend(_words(seg["human_transcript"]))
        ours = diarizer.diarize(WavReader(rec.wav), Constraints())
        labels = {
            "ours": [{"speaker": t.speaker, "start": t.start, "end": t.end} for t in ours.turns],
            "reference_turns": [
                {"speaker": s, "start": a, "end": b} for s, a, b in sorted(rec.reference, key=lambda t: t[1])
            ],
        }
        row = {"recording": rec.name}
        for key, turns in labels.items():
            timeline = _Timeline(turns)
            streams: dict[str, list[str]] = {}
            for w in words:
                streams.setdefault(timeline.speaker_of(w.start, w.end) or "none", []).extend(_words(w.word))
            er = wer.cp_word_error_rate(
                {k: " ".join(v) for k, v in human.items()}, {k: " ".join(v) for k, v in streams.items()}
            )
            totals[key][0] += er.errors
            totals[key][1] += er.length
            row[key] = round(float(er.error_rate), 4)
        per.append(row)
    out = {k: round(e / max(1, n), 4) for k, (e, n) in totals.items()}
    out["label_cost"] = round(out["ours"] - out["reference_turns"], 4)
    out["recordings"] = per
    return out


def speed(diarizer, wav: Path) -> dict:
    from transcription.asr import AsrOptions, Engine
    from transcription.config import load_settings

    settings = load_settings(
        {}, None, {"WHISPER_MODEL": "tiny.en", "WHISPER_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    )
    engine = Engine.load(settings)
    options = AsrOptions.from_settings(settings)
    reader = WavReader(wav)
    engine.transcribe(reader, options)  # warm-up
    t0 = time.perf_counter()
    engine.transcribe(reader, options)
    transcribe_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    diarizer.diarize(reader, Constraints())
    diarize_s = time.perf_counter() - t0
    # Both at once, as the pipeline runs them (diarization on its own thread beside transcription).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        t0 = time.perf_counter()
        job = pool.submit(diarizer.diarize, reader, Constraints())
        engine.transcribe(reader, options)
        job.result()
        both_s = time.perf_counter() - t0
    return {
        "audio_s": round(reader.duration, 1),
        "transcribe_s": round(transcribe_s, 2),
        "diarize_s": round(diarize_s, 2),
        "diarize_x_realtime": round(reader.duration / diarize_s, 1),
        "diarize_share_of_transcribe": round(diarize_s / transcribe_s, 3),
        "with_speakers_over_without": round(both_s / transcribe_s, 3),
    }


def _rss_mb(field: str) -> str:
    return f"int(next(l for l in open('/proc/self/status') if l.startswith('{field}:')).split()[1]) / 1024"


def long_memory(minutes: float, tmp: Path) -> dict:
    """A long recording of five speakers taking turns (assemble.long_recording), diarized in a fresh process:
    its time, and the peak RSS while diarizing (the peak is reset after loading, so the model's own load
    peak does not hide it)."""
    wav, speakers = long_recording(minutes, tmp)
    duration = WavReader(wav).duration
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from transcription.audio import WavReader\n"
        "from transcription.config import Settings\n"
        "from transcription.diarize import Constraints, load\n"
        "d = load(Settings(device='cpu', diarize=True))\n"
        "d.embed(__import__('numpy').zeros(16000, dtype='float32'))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        f"loaded = {_rss_mb('VmRSS')}\n"
        "t0 = time.perf_counter()\n"
        f"r = d.diarize(WavReader(Path({str(wav)!r})), Constraints())\n"
        "seconds = time.perf_counter() - t0\n"
        f"peak = {_rss_mb('VmHWM')}\n"
        "n = len(r.speakers())\n"
        "print(json.dumps({'seconds': seconds, 'speakers': n, 'loaded': loaded, 'peak': peak}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    wav.unlink()
    return {
        "audio_min": round(duration / 60, 1),
        "seconds": round(result["seconds"], 1),
        "x_realtime": round(duration / result["seconds"], 1),
        "speakers_ref": speakers,
        "speakers_found": result["speakers"],
        "rss_after_load_mb": round(result["loaded"], 1),
        "peak_rss_mb": round(result["peak"], 1),
    }


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": __import__("torch").__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def table(results: dict) -> str:
    rows = [
        "| set | recordings | DER collar 0 (missed / FA / confusion) | "
        "DER collar 0.25 (missed / FA / confusion) | count exact (within one) | count errors | "
        "within one of the countable | diarize time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["sets"].items():
        n = len(r["recordings"])
        if "der_collar_0.0" not in r:
            found = ", ".join(f"{x['speakers_found']} ({x['method']})" for x in r["recordings"])
            rows.append(
                f"| {name} | {n} | - | - | found {found} | - | - | {r['diarize_s']} s / {r['audio_s']} s |"
            )
            continue
        der = {
            suffix: f"{_pct(r[f'der_collar_{c}'])} ({_pct(r['missed' + suffix])} / "
            f"{_pct(r['false_alarm' + suffix])} / {_pct(r['confusion' + suffix])})"
            for c, suffix in ((0.0, "_collar_0"), (0.25, ""))
        }
        rows.append(
            f"| {name} | {n} | {der['_collar_0']} | {der['']} | "
            f"{r['count_exact']} ({r['count_within_one']}) | {r['count_errors']} | "
            f"{r['count_within_one_of_countable']} | {r['diarize_s']} s / {r['audio_s']} s |"
        )
    lines = ["\n".join(rows), ""]
    for name, r in results["sets"].items():
        if "speech_missed_at_floor" in r:
            missed = sum(x["speech_missed_s"] for x in r["recordings"])
            lines.append(
                f"{name}: {missed:.1f} s of reference speech in no turn, "
                f"{_pct(r['speech_missed_at_floor'])} of it no louder than outside speech"
            )
    for key, r in results.get("sample_given_count", {}).items():
        lines.append(
            f"Phone call (sample), {key}: DER {_pct(r['der_collar_0.25'])} (collar 0.25), "
            f"{_pct(r['der_collar_0.0'])} (collar 0)"
        )
    cp = results.get("cpwer_calls")
    if cp:
        lines.append(
            f"cpWER on the calls (tiny.en words): {_pct(cp['ours'])} labelled by our turns, "
            f"{_pct(cp['reference_turns'])} by the reference turns: "
            f"labels cost {100 * cp['label_cost']:.1f} points"
        )
    sp = results.get("speed")
    if sp:
        lines.append(
            f"Speed: {sp['diarize_x_realtime']}x real time on {sp['audio_s']} s; "
            f"{100 * sp['diarize_share_of_transcribe']:.1f}% of tiny.en's transcription time; "
            f"with speakers {sp['with_speakers_over_without']}x the time without"
        )
    for lo in (results.get("long_short"), results.get("long")):
        if not lo:
            continue
        lines.append(
            f"Long recording: {lo['audio_min']} min in {lo['seconds']} s ({lo['x_realtime']}x real time), "
            f"speakers {lo['speakers_ref']} -> {lo['speakers_found']}, RSS {lo['rss_after_load_mb']} MB "
            f"after loading, peak {lo['peak_rss_mb']} MB while diarizing"
        )
    m = results["machine"]
    lines.append(
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, {m['date']}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    parser.add_argument("--long-minutes", type=float, default=120.0, help="0 skips the long recording")
    parser.add_argument("--no-speed", action="store_true", help="skip the transcription speed comparison")
    parser.add_argument("--no-cpwer", action="store_true", help="skip cpWER on the calls (needs meeteval)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diarize.json")
    args = parser.parse_args()
    diarizer = load(Settings(device="cpu", diarize=True))
    results: dict = {"machine": machine(), "diarizer": diarizer.name, "sets": {}}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        items = {s: recordings(s, tmp) for s in args.sets}
        for s, recs in items.items():
            end = AMI_SCORED_S if s == "ami" else None
            results["sets"][s] = score_set(diarizer, recs, Constraints(), end)
        if "sample" in items:
            results["sample_given_count"] = {
                f"{k}_speakers_2": score_set(diarizer, items["sample"], c, None)
                for k, c in (("min", Constraints(min=2)), ("num", Constraints(num=2)))
            }
        if "calls" in items and not args.no_cpwer:
            results["cpwer_calls"] = cpwer_calls(diarizer, items["calls"])
        if not args.no_speed:
            wav, _ = conversation(5, tmp)
            results["speed"] = speed(diarizer, wav)
        if args.long_minutes > 0:
            # A twelfth of the length too: memory that stays flat peaks alike on both.
            results["long_short"] = long_memory(args.long_minutes / 12, tmp)
            results["long"] = long_memory(args.long_minutes, tmp)
    print(table(results))
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

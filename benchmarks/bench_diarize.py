"""Speakers: how well and how fast the embedded diarizer finds them.

- DER with pyannote.metrics (collar 0.25 s and 0, overlap scored) and the speaker-count error, on the phone
  call (sample.rttm) and on conversations of 2-5 real speakers assembled from single-speaker clips
  (benchmarks/assemble.py says how; rebuild them with it), as recorded and through a telephone channel;
- word-level speaker accuracy on the phone call against sample.stm (tiny.en words, our speakers);
- speed: diarization x real time, and a whole transcription (tiny.en, CPU) with speakers against without;
- memory: peak RSS of diarizing a long recording (`--long-minutes`, default 120) in a fresh process.

    python benchmarks/bench_diarize.py [--long-minutes 120] [--out benchmarks/results/diarize.json]

Prints a Markdown table and the results as JSON; writes the JSON to --out with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from assemble import DATA, conversation, long_recording  # noqa: E402

from transcription.audio import WavReader, normalize  # noqa: E402
from transcription.config import Settings  # noqa: E402
from transcription.diarize import Constraints, load  # noqa: E402

CALL = DATA / "multi_speaker/pyannote_sample"


def _annotation(turns):
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for i, (speaker, a, b) in enumerate(turns):
        ann[Segment(a, b), i] = speaker
    return ann


def score(reference, result) -> dict:
    from pyannote.metrics.diarization import DiarizationErrorRate

    hyp = [(t.speaker, t.start, t.end) for t in result.turns]
    ref_a, hyp_a = _annotation(reference), _annotation(hyp)
    out = {}
    for collar in (0.25, 0.0):
        metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)  # pyannote's collar is the total
        out[f"der_collar_{collar}"] = round(float(metric(ref_a, hyp_a)), 4)
    out["speakers_ref"] = len({s for s, _, _ in reference})
    out["speakers_found"] = len(result.speakers())
    out["count_error"] = out["speakers_found"] - out["speakers_ref"]
    return out


def call_reference() -> list[tuple[str, float, float]]:
    out = []
    for line in (CALL / "sample.rttm").read_text().splitlines():
        p = line.split()
        out.append((p[7], float(p[3]), float(p[3]) + float(p[4])))
    return out


def word_accuracy(diarizer, tmp: Path, constraints: Constraints) -> dict:
    """tiny.en's words on the call, each given our speaker; scored against sample.stm's utterances under the
    best one-to-one mapping of speaker names."""
    from scipy.optimize import linear_sum_assignment

    from transcription.asr import AsrOptions, Engine
    from transcription.config import load_settings
    from transcription.speakers import _Timeline

    settings = load_settings(
        {}, None, {"WHISPER_MODEL": "tiny.en", "WHISPER_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    )
    wav = tmp / "call.wav"
    normalize(CALL / "sample.wav", wav)
    words = [
        w
        for s in Engine.load(settings).transcribe(WavReader(wav), AsrOptions.from_settings(settings)).segments
        for w in s.words
    ]
    result = diarizer.diarize(WavReader(wav), constraints)
    timeline = _Timeline([{"speaker": t.speaker, "start": t.start, "end": t.end} for t in result.turns])
    utterances = []
    for line in (CALL / "sample.stm").read_text().splitlines():
        p = line.split(maxsplit=5)
        utterances.append((p[2], float(p[3]), float(p[4])))
    pairs = []
    for w in words:
        mid = (w.start + w.end) / 2
        owners = {s for s, a, b in utterances if a <= mid <= b}
        if len(owners) == 1:
            pairs.append((owners.pop(), timeline.speaker_of(w.start, w.end)))
    refs = sorted({r for r, _ in pairs})
    hyps = sorted({h for _, h in pairs if h})
    counts = np.zeros((len(refs), max(1, len(hyps))))
    for r, h in pairs:
        if h:
            counts[refs.index(r), hyps.index(h)] += 1
    rows, cols = linear_sum_assignment(-counts)
    return {
        "words_scored": len(pairs),
        "accuracy": round(float(counts[rows, cols].sum() / max(1, len(pairs))), 4),
    }


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


def table(results: dict) -> str:
    rows = ["| recording | speakers (ref -> found) | DER collar 0.25 | DER collar 0 |", "|---|---|---|---|"]

    def row(name: str, r: dict) -> None:
        rows.append(
            f"| {name} | {r['speakers_ref']} -> {r['speakers_found']} | {100 * r['der_collar_0.25']:.1f}% "
            f"| {100 * r['der_collar_0.0']:.1f}% |"
        )

    for key, r in results["phone_call"].items():
        if "der_collar_0.25" in r:
            row(f"phone call, {key.replace('_', ' ')}", r)
    for band, label in (("assembled", "assembled"), ("assembled_telephone", "assembled, telephone band")):
        for key, r in results.get(band, {}).items():
            row(f"{label}, {key.replace('_', ' ')}", r)
    lines = ["\n".join(rows), ""]
    w = results["phone_call"].get("word_speaker")
    if w:
        lines.append(
            f"Word speaker accuracy on the call: {100 * w['accuracy']:.1f}% of {w['words_scored']} words"
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
    parser.add_argument("--long-minutes", type=float, default=120.0, help="0 skips the long recording")
    parser.add_argument("--no-speed", action="store_true", help="skip the transcription speed comparison")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diarize.json")
    args = parser.parse_args()
    diarizer = load(Settings(device="cpu", diarize=True))
    results: dict = {"machine": machine(), "diarizer": diarizer.name}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        call = tmp / "call-norm.wav"
        normalize(CALL / "sample.wav", call)
        ref = call_reference()
        results["phone_call"] = {
            "estimated": score(ref, diarizer.diarize(WavReader(call), Constraints())),
            "min_speakers_2": score(ref, diarizer.diarize(WavReader(call), Constraints(min=2))),
            "num_speakers_2": score(ref, diarizer.diarize(WavReader(call), Constraints(num=2))),
            "word_speaker": word_accuracy(diarizer, tmp, Constraints(min=2)),
        }
        for band, narrow in (("assembled", False), ("assembled_telephone", True)):
            results[band] = {}
            for n in (2, 3, 4, 5):
                wav, reference = conversation(n, tmp, narrowband=narrow)
                results[band][f"{n}_speakers"] = score(
                    reference, diarizer.diarize(WavReader(wav), Constraints())
                )
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

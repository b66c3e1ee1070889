"""Speakers: how well and how fast the embedded diarizer finds them.

- DER with pyannote.metrics (collar 0.25 s and 0, overlap scored) and the speaker-count error, on the phone
  call (sample.rttm) and on conversations assembled from clips of different real speakers in ../shared/data;
- word-level speaker accuracy on the phone call against sample.stm (tiny.en words, our speakers);
- speed: diarization x real time, and a whole transcription (tiny.en, CPU) with speakers against without;
- memory: peak RSS of diarizing a long recording (`--long-minutes`, default 120) in a fresh process.

Assembled conversations (rebuild them from this file): speakers LJSpeech's reader (LJ001-0001..0016),
John F. Kennedy (jfk.flac), the LibriVox reader (5 clips), the EmoDB speaker (4 clips), the DeepSpeech Russian
speaker (ru.wav); a conversation of N speakers takes the first N of that list and cycles through them for
3 rounds, each turn the speaker's next clip (cycling when a speaker has fewer), all normalised to 16 kHz
mono and joined with 0.5 s of silence. The reference turns are each clip's speech regions (Silero VAD on the
clip alone) under its speaker, since the clips carry no turn annotations.

    python benchmarks/bench_diarize.py [--long-minutes 120] [--out benchmarks/results/diarize.json]
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
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from transcription.audio import WavReader, normalize  # noqa: E402
from transcription.config import Settings  # noqa: E402
from transcription.diarize import Constraints, load  # noqa: E402
from transcription.diarize.speech import speech_regions  # noqa: E402

SPEAKERS = {
    "lj": sorted((DATA / "en_read/ljspeech").glob("LJ001-00*.wav")),
    "jfk": [DATA / "en_read/jfk/jfk.flac"],
    "libri": sorted((DATA / "en_read/librivox_sense_and_sensibility").glob("*.wav")),
    "emodb": sorted((DATA / "emotion/emodb_de").glob("*.wav")),
    "ru": [DATA / "multilingual/ru/ru.wav"],
}
CALL = DATA / "multi_speaker/pyannote_sample"


def _samples(path: Path, tmp: Path) -> np.ndarray:
    out = tmp / f"{path.stem}.norm.wav"
    if not out.exists():
        normalize(path, out)
    return WavReader(out).read()


def _write(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def conversation(n: int, tmp: Path, rounds: int = 3) -> tuple[Path, list[tuple[str, float, float]]]:
    names = list(SPEAKERS)[:n]
    pause = np.zeros(8000, dtype=np.float32)
    pieces, turns, t = [], [], 0.0
    for r in range(rounds):
        for name in names:
            clips = SPEAKERS[name]
            x = _samples(clips[r % len(clips)], tmp)
            turns += [(name, t + a, t + b) for a, b in speech_regions(x)]
            pieces += [x, pause]
            t += (x.size + pause.size) / 16000
    out = tmp / f"conversation-{n}.wav"
    _write(out, np.concatenate(pieces))
    return out, turns


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


def long_memory(minutes: float, tmp: Path) -> dict:
    """A long recording: the 5-speaker conversation repeated; diarized in a fresh process for its peak RSS."""
    wav, _ = conversation(5, tmp)
    one = WavReader(wav).read()
    repeats = max(1, int(minutes * 60 / (one.size / 16000)))
    out = tmp / "long.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        block = (np.clip(one, -1, 1) * 32767).astype("<i2").tobytes()
        for _ in range(repeats):
            w.writeframes(block)
    code = (
        "import json, resource, sys, time\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from transcription.audio import WavReader\n"
        "from transcription.config import Settings\n"
        "from transcription.diarize import Constraints, load\n"
        "d = load(Settings(device='cpu', diarize=True))\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t0 = time.perf_counter()\n"
        f"r = d.diarize(WavReader(__import__('pathlib').Path({str(out)!r})), Constraints())\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'seconds': time.perf_counter() - t0, 'speakers': len(r.speakers()),\n"
        "  'rss_before_mb': base / 1024, 'peak_rss_mb': peak / 1024}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    duration = repeats * one.size / 16000
    out.unlink()
    return {
        "audio_min": round(duration / 60, 1),
        "seconds": round(result["seconds"], 1),
        "x_realtime": round(duration / result["seconds"], 1),
        "speakers_found": result["speakers"],
        "rss_after_load_mb": round(result["rss_before_mb"], 1),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-minutes", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diarize.json")
    args = parser.parse_args()
    diarizer = load(Settings(device="cpu", diarize=True))
    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "diarizer": diarizer.name,
    }
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        call = tmp / "call-norm.wav"
        normalize(CALL / "sample.wav", call)
        results["phone_call"] = {
            "estimated": score(call_reference(), diarizer.diarize(WavReader(call), Constraints())),
            "min_speakers_2": score(call_reference(), diarizer.diarize(WavReader(call), Constraints(min=2))),
            "word_speaker": word_accuracy(diarizer, tmp, Constraints(min=2)),
        }
        results["assembled"] = {}
        for n in (2, 3, 4, 5):
            wav, reference = conversation(n, tmp)
            results["assembled"][f"{n}_speakers"] = score(
                reference, diarizer.diarize(WavReader(wav), Constraints())
            )
        wav, _ = conversation(5, tmp)
        results["speed"] = speed(diarizer, wav)
        if args.long_minutes > 0:
            results["long"] = long_memory(args.long_minutes, tmp)
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

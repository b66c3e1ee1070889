"""Stage 2 on long files: blockwise analysis equals the whole-signal tracker, only the segments' regions are
analysed, and a two-hour file costs no more memory than a half-hour one and prosody time by its speech."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO, ffmpeg, load_json, tiny_env
from faster_whisper import decode_audio

from transcription import schema
from transcription.audio import WavReader
from transcription.config import Settings
from transcription.enrich import enrich_document, prosody
from transcription.enrich.pitch import track_pitch

pytestmark = pytest.mark.needs_data  # reads ../shared/data

SR = 16000
LJ = sorted((DATA / "en_read" / "ljspeech").glob("*.wav"))
JFK = DATA / "en_read" / "jfk" / "jfk.flac"


def _write_wav(path: Path, x: np.ndarray) -> WavReader:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2").tobytes())
    return WavReader(path)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 140 s of continuous read speech: more than two analysis blocks."""
    x = np.concatenate([decode_audio(str(p), sampling_rate=SR) for p in LJ])
    return np.concatenate([x, x])[: 140 * SR]


def test_blockwise_tracks_match_the_whole_signal_tracker(speech: np.ndarray, tmp_path: Path) -> None:
    assert speech.size > 2 * prosody.BLOCK_S * SR
    reader = _write_wav(tmp_path / "speech.wav", speech)
    samples = reader.read()
    whole = track_pitch(samples, SR)  # every frame in one go: the reference
    blocks = prosody.analyse_file(reader, spans=[(0.0, reader.duration)])
    assert blocks.f0_hz.size == whole.f0_hz.size
    voiced = np.isfinite(whole.f0_hz)
    assert voiced.mean() > 0.4
    assert (np.isfinite(blocks.f0_hz) == voiced).mean() > 0.999
    both = voiced & np.isfinite(blocks.f0_hz)
    assert np.abs(blocks.f0_hz[both] - whole.f0_hz[both]).max() < 0.01
    # The reader and the same samples as an array give the same analysis, block edges included.
    from_array = prosody.analyse_file(samples, spans=[(0.0, reader.duration)])
    assert np.array_equal(blocks.f0_hz, from_array.f0_hz, equal_nan=True)
    assert np.array_equal(blocks.energy_db, from_array.energy_db)
    assert blocks.silence_db == from_array.silence_db
    assert np.isfinite(blocks.energy_db).all()
    assert blocks.analysed_s == pytest.approx(reader.duration, abs=0.02)


def test_long_file_analyses_only_the_regions_around_segments(speech: np.ndarray, tmp_path: Path) -> None:
    clip = speech[: 8 * SR]
    x = np.zeros(300 * SR, dtype=np.float32)
    x[200 * SR : 208 * SR] = clip
    reader = _write_wav(tmp_path / "sparse.wav", x)
    analysis = prosody.analyse_file(reader, spans=[(200.0, 204.0), (204.0, 208.0)])
    inside = analysis.frames(200.0, 208.0)
    analysed = np.isfinite(analysis.energy_db)
    # Only the segments +- the pad were read and tracked; everything else is marked as not measured.
    assert analysed.sum() == pytest.approx((8.0 + 2 * prosody.REGION_PAD_S) / prosody.HOP_S, abs=3)
    assert analysed[inside].all() and not np.isfinite(analysis.f0_hz[~analysed]).any()
    assert analysis.analysed_s == pytest.approx(9.0, abs=0.05)
    # Inside, the pitch is the clip's own: the same as tracking it alone, up to its first and last frames.
    alone = track_pitch(reader.read(199.0, 209.0), SR).f0_hz[100:900]
    here = analysis.f0_hz[inside]
    agree = np.isfinite(alone) == np.isfinite(here)
    assert agree.mean() > 0.97
    both = np.isfinite(alone) & np.isfinite(here)
    assert np.median(np.abs(alone[both] - here[both])) < 0.01
    # The pause threshold comes from the analysed frames: loud speech sets it, not 290 s of silence.
    loud = float(np.percentile(analysis.energy_db[analysed], 95))
    assert analysis.silence_db == pytest.approx(loud - 35.0, abs=0.01)


def test_enrich_document_reads_a_wav_reader_like_an_array(tmp_path: Path) -> None:
    x = decode_audio(str(JFK), sampling_rate=SR)
    reader = _write_wav(tmp_path / "jfk.wav", x)

    def doc() -> dict:
        return {
            "language": "en",
            "segments": [
                {"id": 0, "start": 0.3, "end": 4.0, "text": "And so my fellow Americans", "words": []},
                {"id": 1, "start": 4.0, "end": 10.5, "text": "ask not what your country", "words": []},
            ],
            "meta": {},
        }

    a, b = doc(), doc()
    enrich_document(a, reader.read(), Settings(emotion=False))
    enrich_document(b, reader, Settings(emotion=False))
    assert [s["audio_state"] for s in a["segments"]] == [s["audio_state"] for s in b["segments"]]
    assert a["meta"]["enrichment"] == b["meta"]["enrichment"]
    assert all(s["audio_state"]["prosody"]["pitch"]["mean_hz"] for s in b["segments"])


def _peak_rss_mb(root: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    code = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    env = tiny_env(ENABLE_AUDIO_ENRICHMENT="true", ENABLE_EMOTION="false")
    result = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "transcription", "transcribe", "--enrich"]
        + ["--root", str(root)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.strip().splitlines()[-1]) / 1024, result


@pytest.mark.slow
def test_two_hour_enrichment_is_memory_flat_and_analyses_only_speech(tmp_path: Path) -> None:
    unit = tmp_path / "unit.flac"  # 11 s of JFK then silence, 600 s in all
    ffmpeg("-i", str(JFK), "-af", "apad=whole_dur=600", "-ar", "16000", "-ac", "1", str(unit))
    for name, loops in (("short", 2), ("long", 11)):
        (tmp_path / name / "raw_audio").mkdir(parents=True)
        ffmpeg("-stream_loop", str(loops), "-i", str(unit), str(tmp_path / name / "raw_audio" / "f.flac"))
    short_mb, _ = _peak_rss_mb(tmp_path / "short")
    long_mb, _ = _peak_rss_mb(tmp_path / "long")
    docs = {name: load_json(tmp_path / name / "whisper_json" / "f.json") for name in ("short", "long")}
    timings = {name: d["meta"]["timings"] for name, d in docs.items()}
    print(f"peak RSS: 30 min {short_mb:.0f} MB, 2 h {long_mb:.0f} MB; timings {timings}")
    assert long_mb < short_mb + 60
    # Prosody's cost against the speech is measured by `benchmarks/bench_enrich.py --long`; here, that it
    # analyses the speech, not the silence in between (below).
    for name, d in docs.items():
        schema.validate(d)
        assert d["duration"] == pytest.approx(1800 if name == "short" else 7200, abs=0.1)
        speech = [s for s in d["segments"] if s["text"].strip()]
        assert len(speech) >= (3 if name == "short" else 12)
        for seg in speech:
            state = seg["audio_state"]
            assert state["status"]["prosody"] == "ok", state["status"]
            assert state["prosody"]["pitch"]["mean_hz"] is not None, (seg["start"], state)
        analysed = d["meta"]["enrichment"]["prosody"]["analysed"]["seconds"]
        assert analysed < 0.05 * d["duration"]  # segments +- pad, not the silence

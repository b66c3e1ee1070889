"""Accuracy: the pipeline reaches bare faster-whisper's word error rate with the same model and settings."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import DATA, add_input, load_json, run_cli, tiny_env, wer

pytestmark = pytest.mark.needs_data  # reads ../shared/data

LIBRIVOX = DATA / "en_read" / "librivox_sense_and_sensibility"
LJSPEECH = DATA / "en_read" / "ljspeech"


def _references() -> dict[str, str]:
    refs = {p.stem: p.read_text(encoding="utf-8") for p in sorted(LIBRIVOX.glob("*.txt"))}
    with open(LJSPEECH / "transcripts.psv", encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="|"):
            refs[row[0]] = row[1]
    return refs


def _bare_faster_whisper(paths: list[Path]) -> dict[str, str]:
    """The baseline: faster-whisper alone, same model files, same decoding settings as our defaults."""
    from faster_whisper import WhisperModel

    from transcription.config import load_settings
    from transcription.models import resolve

    settings = load_settings({}, None, tiny_env())
    model = WhisperModel(str(resolve("tiny.en", settings)), device="cpu", compute_type="int8")
    out = {}
    for path in paths:
        segments, _ = model.transcribe(
            str(path),
            beam_size=5,
            vad_filter=True,
            word_timestamps=True,
            condition_on_previous_text=False,
            hallucination_silence_threshold=2.0,
        )
        out[path.stem] = " ".join(s.text.strip() for s in segments)
    return out


@pytest.mark.slow
def test_wer_matches_bare_faster_whisper(tmp_path: Path) -> None:
    refs = _references()
    paths = sorted(LIBRIVOX.glob("*.wav")) + sorted(LJSPEECH.glob("*.wav"))
    for p in paths:
        add_input(tmp_path, p)
    result = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env())
    assert result.returncode == 0, result.stderr
    ours = {p.stem: load_json(tmp_path / "whisper_json" / f"{p.stem}.json")["text"] for p in paths}
    bare = _bare_faster_whisper(paths)
    stems = [p.stem for p in paths]
    ours_wer = wer([refs[s] for s in stems], [ours[s] for s in stems])
    bare_wer = wer([refs[s] for s in stems], [bare[s] for s in stems])
    print(f"WER ours={ours_wer:.4f} bare={bare_wer:.4f} over {len(stems)} clips")
    assert ours_wer <= bare_wer + 0.005
    assert ours_wer < 0.15  # tiny.en is good on read English; a broken pipeline is far above this


def test_jfk_exact(tmp_path: Path) -> None:
    add_input(tmp_path, DATA / "en_read" / "jfk" / "jfk.flac")
    result = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env())
    assert result.returncode == 0, result.stderr
    doc = load_json(tmp_path / "whisper_json" / "jfk.json")
    assert wer([(DATA / "en_read" / "jfk" / "jfk.txt").read_text()], [doc["text"]]) == 0.0
    assert doc["language"] == "en"
    assert doc["duration"] == pytest.approx(11.0, abs=0.05)
    assert all(s["words"] for s in doc["segments"])


@pytest.mark.slow
def test_word_timings_match_forced_alignment(tmp_path: Path) -> None:
    """Word starts agree with the LibriVox forced-aligner timings (no drift), matched word by word."""
    import json

    from conftest import normalize_text

    errors = []
    for wav in sorted(LIBRIVOX.glob("*.wav")):
        add_input(tmp_path, wav)
    assert run_cli("transcribe", "--root", str(tmp_path), env=tiny_env()).returncode == 0
    for wav in sorted(LIBRIVOX.glob("*.wav")):
        aligned = json.loads(wav.with_suffix(".json").read_text())
        ref = [(w["t"].split("(")[0], w["b"]) for w in aligned["w"] if not w["t"].startswith("<")]
        ours = [
            (normalize_text(w["word"]), w["start"])
            for s in load_json(tmp_path / "whisper_json" / f"{wav.stem}.json")["segments"]
            for w in s["words"]
        ]
        ours = [(t[0], start) for t, start in ours if t]
        j = 0
        for word, start in ours:  # greedy in-order match of identical words
            for k in range(j, min(j + 4, len(ref))):
                if ref[k][0] == word:
                    errors.append(abs(ref[k][1] - start))
                    j = k + 1
                    break
    errors.sort()
    median = errors[len(errors) // 2]
    print(f"word start error: median {median:.3f}s over {len(errors)} matched words")
    assert len(errors) > 50
    assert median < 0.25

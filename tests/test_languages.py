"""Languages within one recording (DESIGN.md): per-chunk language detection with its confidence gate, the
language spans a window is decoded in, the document's `languages` and WHISPER_LANGUAGES (the loss detector's
own tests are in test_recovery.py).

The unit tests use hand-made probabilities and segments. The model tests join real clips from ../shared/data
into one code-switched recording (English, German, German, Russian, English, Mandarin, with 0.8 s of silence
between them) and check each part's segments by its time range.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, load_json, run_cli, tiny_env

from transcription import languages
from transcription.asr import AsrOptions, Engine
from transcription.audio import SAMPLE_RATE
from transcription.config import ConfigError, load_settings
from transcription.languages import Span, Unit
from transcription.schema import Segment, validate
from transcription.window_plan import WINDOW_S, AsrResult, FileRun, Source, main_language, windows

SR = SAMPLE_RATE
GAP_S = 0.8
# (language, clip, a word or characters its transcript must contain)
PARTS = [
    ("en", DATA / "en_read" / "jfk" / "jfk.flac", "country"),
    (
        "de",
        DATA / "emotion" / "emodb_de" / "03a01Nc.wav",
        "eisschrank",
    ),  # Der Lappen liegt auf dem Eisschrank.
    ("de", DATA / "emotion" / "emodb_de" / "03a02Ta.wav", "mittwoch"),  # Das will sie am Mittwoch abgeben.
    ("ru", DATA / "multilingual" / "ru" / "ru.wav", "ребят"),  # бедняга ребят на его месте ...
    (
        "en",
        DATA / "en_read" / "ljspeech" / "LJ001-0002.wav",
        "comparatively",
    ),  # in being comparatively modern.
    ("zh", DATA / "multilingual" / "zh" / "chinese.flac", "自己"),  # 砸自己的脚
]
OVERLAP_S = 0.3  # a segment belongs to a part when it overlaps it by this much


def _sec(seconds: float) -> int:
    return int(round(seconds * SR))


# ------------------------------------------------------------------ assign / choose


def _units(*seconds: float) -> list[Unit]:
    """Consecutive units of the given lengths, 0.5 s apart."""
    out, t = [], 0.0
    for s in seconds:
        out.append(Unit(_sec(t), _sec(t + s)))
        t += s + 0.5
    return out


def test_choose_restricts_and_renormalises() -> None:
    probs = {"ru": 0.55, "de": 0.405, "en": 0.045}
    assert languages.choose(probs, None) == ("ru", 0.55)
    code, p = languages.choose(probs, ("de", "en"))
    assert code == "de" and p == pytest.approx(0.9)
    # An allowed language the detector never mentions counts as 0.
    assert languages.choose({"ru": 1.0}, ("de", "en"))[1] == 0.0


def test_assign_confident_switch() -> None:
    units = _units(2.0, 2.0, 2.0)
    items = [
        ([0], {"en": 0.95, "de": 0.05}),
        ([1], {"de": 0.90, "en": 0.10}),
        ([2], {"en": 0.85, "de": 0.15}),
    ]
    languages.assign(items, units, None, None)
    assert [u.language for u in units] == ["en", "de", "en"]
    assert [u.probability for u in units] == pytest.approx([0.95, 0.90, 0.85])


def test_assign_unsure_item_takes_the_neighbour_it_rates_higher() -> None:
    # Between a sure English and a sure German item, an unsure one rating de above en becomes German ...
    units = _units(3.0, 0.4, 3.0)
    items = [
        ([0], {"en": 0.97, "de": 0.03}),
        ([1], {"de": 0.45, "en": 0.35, "fr": 0.20}),
        ([2], {"de": 0.96, "en": 0.04}),
    ]
    languages.assign(items, units, None, None)
    assert [u.language for u in units] == ["en", "de", "de"]
    assert units[1].probability == pytest.approx(0.45)
    # ... and one whose own top language is neither neighbour's (a name, an "mm") takes the neighbour it
    # rates higher, never its own unsure guess.
    units = _units(3.0, 0.4, 3.0)
    items[1] = ([1], {"fr": 0.60, "en": 0.30, "de": 0.10})
    languages.assign(items, units, None, None)
    assert [u.language for u in units] == ["en", "en", "de"]
    assert units[1].probability == pytest.approx(0.30)


def test_assign_unsure_start_keeps_the_previous_windows_language() -> None:
    units = _units(1.0, 3.0)
    items = [([0], {"fr": 0.5, "de": 0.3, "en": 0.2}), ([1], {"en": 0.9, "de": 0.1})]
    languages.assign(items, units, None, "de")
    assert [u.language for u in units] == ["de", "en"]  # de (previous) rated above en (after)
    # Nothing sure at all, but a previous language: everything stays in it.
    units = _units(1.0, 3.0)
    items = [([0], {"fr": 0.5, "de": 0.3}), ([1], {"en": 0.6, "de": 0.4})]
    languages.assign(items, units, None, "de")
    assert [u.language for u in units] == ["de", "de"]


def test_assign_allowed_restricts_and_renormalises() -> None:
    units = _units(2.0, 2.0)
    items = [([0], {"ru": 0.55, "de": 0.405, "en": 0.045}), ([1], {"en": 0.9, "de": 0.05, "ru": 0.05})]
    languages.assign(items, units, ("de", "en"), None)
    assert [u.language for u in units] == ["de", "en"]
    assert units[0].probability == pytest.approx(0.9)  # 0.405 / (0.405 + 0.045): sure among de, en
    assert units[1].probability == pytest.approx(0.9 / 0.95)
    # Unrestricted, the first item is unsure (ru 0.55) and takes its neighbour's language.
    units = _units(2.0, 2.0)
    languages.assign(items, units, None, None)
    assert [u.language for u in units] == ["en", "en"]


def test_assign_without_any_sure_item_falls_back_to_the_length_weighted_language() -> None:
    # Unweighted, de has more (0.4 + 0.7 > 0.6 + 0.3); weighted by 3 s and 1 s, en has more.
    items = [([0], {"en": 0.6, "de": 0.4}), ([1], {"de": 0.7, "en": 0.3})]
    units = _units(3.0, 1.0)
    languages.assign(items, units, None, None)
    assert [u.language for u in units] == ["en", "en"]
    assert [u.probability for u in units] == pytest.approx([0.6, 0.3])
    units = _units(1.0, 3.0)
    languages.assign(items, units, None, None)
    assert [u.language for u in units] == ["de", "de"]
    # A group item (several units) weighs all its units' speech.
    units = _units(1.0, 1.5, 1.5, 1.0)
    languages.assign([([0], items[0][1]), ([1, 2], items[1][1]), ([3], items[0][1])], units, None, None)
    assert {u.language for u in units} == {"de"}  # en 0.6*2 + 0.3*3 = 2.1 < de 0.4*2 + 0.7*3 = 2.9


# ------------------------------------------------------------------ spans / summary


def test_spans_cut_in_the_middle_of_pauses_and_cover_the_window() -> None:
    units = [
        Unit(_sec(0.5), _sec(2.0), "en", 0.9),
        Unit(_sec(2.5), _sec(3.5), "en", 0.6),
        Unit(_sec(4.5), _sec(6.0), "de", 0.95),
        Unit(_sec(7.0), _sec(8.0), "en", 0.99),
    ]
    total = _sec(9.0)
    out = languages.spans(units, total)
    assert [s.language for s in out] == ["en", "de", "en"]
    assert out[0].start == 0 and out[-1].end == total
    assert all(a.end == b.start for a, b in zip(out, out[1:], strict=False))  # no gap, no overlap
    assert out[0].end == _sec(4.0)  # middle of the 3.5-4.5 s pause
    assert out[1].end == _sec(6.5)  # middle of the 6.0-7.0 s pause
    # Each span's probability is its units' mean, weighted by length.
    assert out[0].probability == pytest.approx((0.9 * 1.5 + 0.6 * 1.0) / 2.5)
    assert out[1].probability == pytest.approx(0.95)
    assert [s.speech for s in out] == pytest.approx([2.5, 1.5, 1.0])  # seconds of speech in each
    # One language: one span over the whole window.
    same = [Unit(u.start, u.end, "de", 0.9) for u in units]
    assert languages.spans(same, total) == [Span(0, total, "de", pytest.approx(0.9), pytest.approx(5.0))]


def test_a_window_without_speech_neither_names_nor_carries_a_language() -> None:
    """Whisper "detects" a language in noise too; that is not a language anyone spoke."""
    noise = [Span(0, _sec(600), "nn", 0.4, 0.0)]
    heard = [Span(0, _sec(10), "de", 0.95, 4.0), Span(_sec(10), _sec(20), "fr", 0.9, 3.0)]
    assert languages.carried(noise, None) is None
    assert languages.carried(noise, "de") == "de"
    assert languages.carried(heard, None) == "fr"
    assert main_language([], [("nn", 0.4, 0.0)], None) == (None, None)
    assert main_language([], [("nn", 0.4, 0.0)], "de") == ("de", 1.0)
    assert main_language([], [("nn", 0.4, 0.0), ("de", 0.9, 2.0)], None) == ("de", 0.9)
    # Noise the VAD took for speech, "detected" unsurely, without any text: no speech, no language.
    assert main_language([], [("en", 0.31, 2.0)], None) == (None, None)
    assert main_language([], [("en", 0.31, 2.0), ("de", 0.9, 2.0)], None) == ("de", 0.9)


def test_summary_ranks_languages_by_seconds() -> None:
    segments = [
        {"start": 0.0, "end": 2.0, "language": "de"},
        {"start": 2.0, "end": 5.5, "language": "en"},
        {"start": 6.0, "end": 7.0, "language": "de"},
        {"start": 7.0, "end": 8.0, "language": None},  # unknown: not counted
        {"start": 8.0, "end": 8.5, "language": "zh"},
        {"start": 9.0, "end": 9.5, "language": "ru"},
    ]
    assert languages.summary(segments) == [
        {"language": "en", "seconds": 3.5},
        {"language": "de", "seconds": 3.0},
        {"language": "ru", "seconds": 0.5},  # ties: by code
        {"language": "zh", "seconds": 0.5},
    ]
    as_segments = [Segment(0, s["start"], s["end"], "x", 0.0, 0.0, [], s["language"]) for s in segments]
    assert languages.summary(as_segments) == languages.summary(segments)
    assert languages.summary([]) == []


# ------------------------------------------------------------------ settings


def test_languages_setting_is_validated() -> None:
    env = {"HF_HUB_OFFLINE": "1"}
    s = load_settings({"model": "base", "languages": "en,DE"}, environ=env)
    assert s.languages == ("de", "en")  # sorted: en,de and de,en are one setting
    assert load_settings({"model": "base", "languages": "auto"}, environ=env).languages is None
    assert load_settings({"model": "base"}, environ=env).language_detection == "chunk"
    s = load_settings({"model": "base"}, environ={**env, "WHISPER_LANGUAGE_DETECTION": "file"})
    assert s.language_detection == "file"
    assert load_settings({"model": "tiny.en", "languages": "en"}, environ=env).languages == ("en",)
    with pytest.raises(ConfigError, match="English-only"):
        load_settings({"model": "tiny.en", "languages": "de"}, environ=env)
    with pytest.raises(ConfigError, match="WHISPER_LANGUAGES"):
        load_settings(
            {"model": "base"}, environ={**env, "WHISPER_LANGUAGE": "fr", "WHISPER_LANGUAGES": "en,de"}
        )
    with pytest.raises(ConfigError):
        load_settings({"model": "base", "languages": "en,xx"}, environ=env)
    with pytest.raises(ConfigError):
        load_settings({"model": "base", "language_detection": "segment"}, environ=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "tiny.en", "--languages", "de"], "model 'tiny.en' is English-only and cannot detect de"),
        (
            ["--model", "base", "--language", "fr", "--languages", "en,de"],
            "WHISPER_LANGUAGE=fr is not among WHISPER_LANGUAGES=de,en",
        ),
    ],
    ids=["english-only-model", "fixed-language-not-listed"],
)
def test_cli_language_config_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "raw_audio").mkdir()
    result = run_cli("transcribe", "--root", str(tmp_path), *args, env=tiny_env(), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "configuration error" in result.stderr and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "whisper_json").exists()


# ------------------------------------------------------------------ the models on real speech


@pytest.fixture(scope="module")
def mixed(data: Path) -> tuple[np.ndarray, list[tuple[str, float, float, str]]]:
    """The code-switched recording and its parts: (language, start s, end s, expected word)."""
    from faster_whisper.audio import decode_audio

    gap = np.zeros(_sec(GAP_S), dtype=np.float32)
    pieces: list[np.ndarray] = []
    parts: list[tuple[str, float, float, str]] = []
    t = 0
    for language, path, word in PARTS:
        clip = decode_audio(str(path), SR)
        parts.append((language, t / SR, (t + clip.shape[0]) / SR, word))
        pieces += [clip, gap]
        t += clip.shape[0] + gap.shape[0]
    return np.concatenate(pieces).astype(np.float32), parts


def _settings(model: str):
    return load_settings({"model": model, "device": "cpu"}, environ={"HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def base(data: Path) -> Engine:
    engine = Engine.load(_settings("base"))
    assert engine.multilingual
    return engine


@pytest.fixture(scope="module")
def tiny(data: Path) -> Engine:
    engine = Engine.load(_settings("tiny.en"))
    assert not engine.multilingual
    return engine


def _by_part(segments: list, parts: list[tuple[str, float, float, str]]) -> list[list]:
    """For each part, the segments (Segment or document dict) overlapping it by OVERLAP_S or more."""

    def times(s) -> tuple[float, float]:
        return (s["start"], s["end"]) if isinstance(s, dict) else (s.start, s.end)

    return [
        [s for s in segments if min(times(s)[1], end) - max(times(s)[0], start) >= OVERLAP_S]
        for _, start, end, _ in parts
    ]


def _check_parts(segments: list, parts: list[tuple[str, float, float, str]]) -> None:
    """Every part has segments, all in its language, whose text has its expected word."""
    for (language, start, end, word), found in zip(parts, _by_part(segments, parts), strict=True):
        where = f"{language} part at {start:.1f}-{end:.1f} s"
        assert found, f"no segment for the {where}: {[_describe(s) for s in segments]}"
        got = [_describe(s) for s in found]
        assert all(_lang(s) == language for s in found), f"{where}: {got}"
        assert word in " ".join(_text(s) for s in found).lower(), f"{where}: {got}"


def _lang(s) -> str | None:
    return s["language"] if isinstance(s, dict) else s.language


def _text(s) -> str:
    return s["text"] if isinstance(s, dict) else s.text


def _describe(s) -> str:
    start, end = (s["start"], s["end"]) if isinstance(s, dict) else (s.start, s.end)
    return f"{start:.2f}-{end:.2f} {_lang(s)} {_text(s)!r}"


def _check_result(result: AsrResult, parts: list[tuple[str, float, float, str]]) -> None:
    _check_parts(result.segments, parts)
    text = " ".join(s.text for s in result.segments).lower()
    assert "lappen" in text and "eisschrank" in text, text
    assert any("\u0400" <= ch <= "\u04ff" for ch in text), text  # Cyrillic
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text), text  # Han
    ranked = languages.summary(result.segments)
    assert {r["language"] for r in ranked} == {"en", "de", "ru", "zh"}, ranked
    assert result.language == ranked[0]["language"] == "en"  # the most speech: JFK and LJSpeech
    assert result.language_probability is not None and 0.5 < result.language_probability <= 1.0
    assert result.lost == [] and not any("speech without text" in w for w in result.warnings)


@pytest.mark.slow
def test_base_per_chunk_gives_each_part_its_language(base: Engine, mixed) -> None:
    samples, parts = mixed
    result = base.transcribe(samples, AsrOptions())
    assert AsrOptions().language_detection == "chunk"  # the default
    _check_result(result, parts)


@pytest.mark.slow
def test_base_packed_path_gives_each_part_its_language(base: Engine, mixed) -> None:
    from transcription.packing import SharedPacker

    samples, parts = mixed
    packer = SharedPacker(base, 4)
    try:
        result = packer.transcribe_samples(samples, AsrOptions(batch_size=4))
    finally:
        packer.close()
    _check_result(result, parts)


@pytest.mark.slow
def test_base_allowed_languages_restrict_detection(base: Engine, mixed) -> None:
    samples, parts = mixed
    result = base.transcribe(samples, AsrOptions(languages=("de", "en")))
    assert {s.language for s in result.segments} <= {"de", "en"}, [_describe(s) for s in result.segments]
    assert not any(
        "\u0400" <= ch <= "\u04ff" or "\u4e00" <= ch <= "\u9fff" for s in result.segments for ch in s.text
    )
    # The English and German parts are as without the restriction.
    keep = [p for p in parts if p[0] in ("en", "de")]
    for (language, start, _end, word), found in zip(keep, _by_part(result.segments, keep), strict=True):
        assert found and all(s.language == language for s in found), (start, [_describe(s) for s in found])
        assert word in " ".join(s.text for s in found).lower(), [_describe(s) for s in found]
    assert {r["language"] for r in languages.summary(result.segments)} <= {"de", "en"}


@pytest.mark.slow
def test_one_language_recording_is_one_span_and_decodes_as_detection_once(base: Engine, data: Path) -> None:
    """A recording in one language is decoded exactly as with detection once per file."""
    from faster_whisper.audio import decode_audio

    samples = decode_audio(str(PARTS[0][1]), SR)
    window = FileRun(Source(samples), AsrOptions(), base.model, base.multilingual).plan(0)
    units, plan = window.units, window.spans
    assert len(units) >= 2  # JFK pauses between phrases
    assert [(s.start, s.end, s.language) for s in plan] == [(0, samples.shape[0], "en")]
    chunk = base.transcribe(samples, AsrOptions())
    once = base.transcribe(samples, AsrOptions(language_detection="file"))
    assert [(s.start, s.end, s.text, s.language) for s in chunk.segments] == [
        (s.start, s.end, s.text, s.language) for s in once.segments
    ]
    assert chunk.language == once.language == "en"


@pytest.mark.slow
def test_base_speech_after_a_window_of_noise_gets_its_own_language(base: Engine) -> None:
    """A lead-in longer than a window (a meeting recorded before anyone speaks) holds no language: Whisper's
    guess on its noise names none in the document, and neither mode decodes the speech after it in it."""
    from faster_whisper.audio import decode_audio

    lead = (np.random.default_rng(0).standard_normal(_sec(WINDOW_S + 5)) * 0.002).astype(np.float32)
    german = [decode_audio(str(path), SR) for _, path, _ in PARTS[1:3]]
    samples = np.concatenate([lead, german[0], np.zeros(_sec(GAP_S), np.float32), german[1]])
    assert len(windows(Source(samples))) == 2
    from transcription.packing import SharedPacker

    packer = SharedPacker(base, 4)
    try:
        results = {
            (path, detection): run(samples, AsrOptions(batch_size=4, language_detection=detection))
            for path, run in (("per file", base.transcribe), ("packed", packer.transcribe_samples))
            for detection in ("file", "chunk")
        }
    finally:
        packer.close()
    for detection, result in results.items():
        found = [_describe(s) for s in result.segments]
        assert result.segments and {s.language for s in result.segments} == {"de"}, (detection, found)
        assert "eisschrank" in " ".join(s.text for s in result.segments).lower(), (detection, found)
        assert result.language == "de" and result.language_probability is not None, detection
    quiet = base.transcribe(lead[: _sec(20)], AsrOptions())
    assert quiet.segments == [] and (quiet.language, quiet.language_probability) == (None, None)
    assert "no speech detected" in quiet.warnings


@pytest.mark.slow
def test_base_names_no_language_for_white_noise(base: Engine) -> None:
    noise = (np.random.default_rng(0).standard_normal(_sec(10)) * 0.3).astype(np.float32)
    for vad in (True, False):
        result = base.transcribe(noise, AsrOptions(vad=vad))
        assert result.segments == [] and "no speech detected" in result.warnings, vad
        assert (result.language, result.language_probability) == (None, None), vad


@pytest.mark.slow
def test_english_only_model_never_detects(tiny: Engine, mixed) -> None:
    samples, parts = mixed
    window = FileRun(Source(samples), AsrOptions(), tiny.model, tiny.multilingual).plan(0)
    units, plan = window.units, window.spans
    assert [(s.start, s.end, s.language, s.probability) for s in plan] == [(0, samples.shape[0], "en", 1.0)]
    assert {u.language for u in units} == {"en"}
    auto = tiny.transcribe(samples, AsrOptions())
    fixed = tiny.transcribe(samples, AsrOptions(language="en"))
    assert auto.segments and {s.language for s in auto.segments} == {"en"}
    assert [(s.start, s.end, s.text) for s in auto.segments] == [
        (s.start, s.end, s.text) for s in fixed.segments
    ]
    assert auto.language == "en" and auto.language_probability == 1.0
    assert languages.summary(auto.segments) == languages.summary(fixed.segments)
    assert [r["language"] for r in languages.summary(auto.segments)] == ["en"]


# ------------------------------------------------------------------ the CLI document


def _write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def _transcribe_mixed(root: Path, samples: np.ndarray, *flags: str) -> dict:
    """The CLI's schema-valid document for the mixed recording, transcribed with base and `flags`."""
    _write_wav(root / "raw_audio" / "mixed.wav", samples)
    env = tiny_env(WHISPER_MODEL="base", WHISPER_LANGUAGE="auto")
    result = run_cli("transcribe", "--root", str(root), *flags, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = load_json(root / "whisper_json" / "mixed.json")
    validate(doc)
    return doc


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_document_records_each_segments_language(tmp_path: Path, mixed) -> None:
    samples, parts = mixed
    doc = _transcribe_mixed(tmp_path, samples)
    segments = doc["segments"]
    assert all("language" in s for s in segments)
    _check_parts(segments, parts)
    assert [r["language"] for r in doc["languages"]][:1] == ["en"]
    assert {r["language"] for r in doc["languages"]} == {"en", "de", "ru", "zh"}
    assert doc["languages"] == languages.summary(segments)
    assert doc["language"] == "en"
    assert 0.5 < doc["language_probability"] <= 1.0
    meta = doc["meta"]
    assert meta["language_detection"] == "chunk"
    assert "languages_allowed" not in meta
    assert set(meta["recovery"]) == {"retried", "recovered"}
    assert "speech_without_text" not in meta
    assert not any("speech without text" in w for w in meta["warnings"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cli_allowed_languages_and_detection_once(tmp_path: Path, mixed) -> None:
    """--languages en,de is recorded and keeps ru/zh out; --language-detection file is recorded."""
    samples, _ = mixed
    doc = _transcribe_mixed(tmp_path, samples, "--languages", "en,de", "--language-detection", "file")
    assert doc["meta"]["language_detection"] == "file"
    assert doc["meta"]["languages_allowed"] == ["de", "en"]
    assert {s["language"] for s in doc["segments"]} <= {"de", "en"}
    assert {r["language"] for r in doc["languages"]} <= {"de", "en"}
    lost = doc["meta"].get("speech_without_text", [])
    assert [f"speech without text at {x['start']:.1f}–{x['end']:.1f} s" for x in lost] == [
        w for w in doc["meta"]["warnings"] if w.startswith("speech without text")
    ]

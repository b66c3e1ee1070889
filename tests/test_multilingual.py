"""The multilingual base model (offline, joined from two PyPI parts) identifies Russian and Mandarin."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA, add_input, load_json, run_cli, tiny_env

pytestmark = pytest.mark.needs_data  # reads ../shared/data


@pytest.mark.slow
def test_base_identifies_ru_and_zh(tmp_path: Path) -> None:
    add_input(tmp_path, DATA / "multilingual" / "ru" / "ru.wav")
    add_input(tmp_path, DATA / "multilingual" / "zh" / "chinese.flac")
    env = tiny_env(WHISPER_MODEL="base", WHISPER_LANGUAGE="auto", HF_HOME=str(tmp_path / "hf"))
    result = run_cli("transcribe", "--root", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    ru = load_json(tmp_path / "whisper_json" / "ru.json")
    zh = load_json(tmp_path / "whisper_json" / "chinese.json")
    assert ru["language"] == "ru" and ru["language_probability"] > 0.5
    assert zh["language"] == "zh"
    assert any("\u0400" <= ch <= "\u04ff" for ch in ru["text"])  # Cyrillic text
    assert ru["meta"]["model"] == "base"
    # The joined model lives in the cache once; a second run reuses it.
    assert (tmp_path / "hf" / "slower-whisper" / "bundled" / "base" / "model.bin").is_file()


@pytest.mark.slow
def test_phone_call_has_no_repetition_loops(tmp_path: Path) -> None:
    """The two-speaker phone call, default settings: no repetition loops, text close to the reference."""
    from conftest import wer

    sample = DATA / "multi_speaker" / "pyannote_sample"
    add_input(tmp_path, sample / "sample.wav")
    env = tiny_env(WHISPER_MODEL="base", WHISPER_LANGUAGE="auto", HF_HOME=str(tmp_path / "hf"))
    result = run_cli("transcribe", "--root", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    doc = load_json(tmp_path / "whisper_json" / "sample.json")
    words = [w["word"].strip().lower().strip(".,?!") for s in doc["segments"] for w in s["words"]]
    for n in (1, 2, 3):  # no n-gram repeated 4+ times in a row
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        for i in range(len(grams) - 3 * n):
            assert not all(grams[i] == grams[i + k * n] for k in range(1, 4)), f"loop at {grams[i]}"
    reference = " ".join(
        line.split(maxsplit=5)[5] for line in (sample / "sample.stm").read_text().splitlines() if line.strip()
    )
    score = wer([reference], [doc["text"]])
    print(f"phone call WER {score:.3f}")
    assert score < 0.5

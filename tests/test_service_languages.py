"""The service on a recording that changes language (multilingual `base`, language auto): every part comes
back in its own language, in the full document, OpenAI's verbose_json (the main language) and a stream."""

from __future__ import annotations

import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import DATA
from service_support import Server, make_server, openai_client, post_audio, serve_module, stream_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.needs_data]

# (language, clip, a word its part must contain), joined with 0.8 s of silence
PARTS = [
    ("en", DATA / "en_read/jfk/jfk.flac", "country"),
    ("de", DATA / "emotion/emodb_de/03a01Fa.wav", "lappen"),
    ("de", DATA / "emotion/emodb_de/03a02Ta.wav", "mittwoch"),
    ("ru", DATA / "multilingual/ru/ru.wav", "ребят"),
]
PAUSE_S = 0.8


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, float, float, str]]]:
    """A WAV of the parts, and each part's (language, start, end, word)."""
    from faster_whisper.audio import decode_audio

    pieces, spans, t = [], [], 0.0
    for language, clip, word in PARTS:
        samples = decode_audio(str(clip), 16_000)
        spans.append((language, t, t + samples.shape[0] / 16_000, word))
        pieces += [samples, np.zeros(int(PAUSE_S * 16_000), np.float32)]
        t = spans[-1][2] + PAUSE_S
    path = tmp_path_factory.mktemp("mixed") / "mixed language.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes((np.concatenate(pieces) * 32767).astype("<i2").tobytes())
    return path, spans


@pytest.fixture(scope="module")
def base_server(tmp_path_factory: pytest.TempPathFactory):
    server = make_server(tmp_path_factory.mktemp("service-languages"), "root", ENABLE_EMOTION="false")
    server.extra_args = ["--model", "base"]  # after the fixture's --model tiny.en: the last one counts
    yield from serve_module(server)


def test_each_part_in_its_own_language(base_server: Server, mixed) -> None:
    path, spans = mixed
    r = post_audio(base_server, path, {"response_format": "slower_whisper_json"})
    assert r.status_code == 200, r.text
    doc = r.json()
    for language, start, end, word in spans:
        inside = [s for s in doc["segments"] if start - 0.3 <= (s["start"] + s["end"]) / 2 <= end + 0.3]
        assert inside and {s["language"] for s in inside} == {language}, (language, inside)
        assert word in " ".join(s["text"] for s in inside).lower(), (word, inside)
    assert {item["language"] for item in doc["languages"]} == {"en", "de", "ru"}
    assert doc["language"] == doc["languages"][0]["language"] == "en"
    assert doc["meta"]["language_detection"] == "chunk" and "speech_without_text" not in doc["meta"]

    verbose = openai_client(base_server).audio.transcriptions.create(
        model="whisper-1", file=path.open("rb"), response_format="verbose_json"
    )
    assert verbose.language == "english"  # OpenAI's field: the main language
    assert "Lappen" in verbose.text and "Ребят" in verbose.text


def test_a_stream_carries_every_language(base_server: Server, mixed) -> None:
    path, _ = mixed
    events = stream_all(base_server, path, timeout=300)
    deltas = "".join(e["delta"] for e in events if e["type"] == "transcript.text.delta")
    done = events[-1]
    assert done["type"] == "transcript.text.done"
    assert deltas.strip() == done["text"].strip()
    assert "Eisschrank" in done["text"] and "месте" in done["text"]


def test_metrics_count_the_loss_detector(base_server: Server) -> None:
    text = httpx.get(f"{base_server.url}/metrics", timeout=10).text
    for name in (
        "slower_whisper_speech_retried_total",
        "slower_whisper_speech_without_text_total",
        "slower_whisper_speech_without_text_seconds_total",
    ):
        assert f"\n{name} " in text, name

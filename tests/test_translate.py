"""Translation into English (Whisper's translate task) with the multilingual `base` model on real Russian and
Mandarin speech: POST /v1/audio/translations in every response format, and `transcribe --task translate`
on the per-file and the packed (throughput) paths.

ru.wav says "бедняга ребят на его месте должен был быть я" ("poor guy... guys, I should have been in his
place"); chinese.flac says "砸自己的脚" ("to drop something on one's own foot"). The checks are loose: English
text, no Cyrillic or Han characters, and a content word a person would expect.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
import service_support as support
from conftest import DATA, add_input, load_json, run_cli, tiny_env
from service_support import JFK, Server, make_server, openai_client, serve_module

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.needs_data,
    # The openai package marks its translations call deprecated (OpenAI's own whisper-1 is being retired);
    # the endpoint it calls is what this server serves.
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]
main_server = support.main_server  # the shared tiny.en server

RU = DATA / "multilingual" / "ru" / "ru.wav"
ZH = DATA / "multilingual" / "zh" / "chinese.flac"


def _foreign(text: str) -> bool:
    return any("\u0400" <= ch <= "\u04ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)


def _says_ru(text: str) -> bool:
    lowered = text.lower()
    return not _foreign(text) and "place" in lowered


def _says_zh(text: str) -> bool:
    lowered = text.lower()
    return not _foreign(text) and ("foot" in lowered or "feet" in lowered)


@pytest.fixture(scope="module")
def base_server(tmp_path_factory: pytest.TempPathFactory):
    server = make_server(tmp_path_factory.mktemp("service-base"), "root", ENABLE_EMOTION="false")
    server.extra_args = ["--model", "base"]  # after the fixture's --model tiny.en: the last one counts
    yield from serve_module(server)


def test_translations_json_with_openai_client(base_server: Server) -> None:
    client = openai_client(base_server)
    with RU.open("rb") as fh:
        ru = client.audio.translations.create(model="whisper-1", file=fh)
    with ZH.open("rb") as fh:
        zh = client.audio.translations.create(model="base", file=fh, temperature=0.0)
    assert _says_ru(ru.text), ru.text
    assert _says_zh(zh.text), zh.text
    # `language` (beyond OpenAI's fields) names the spoken language instead of detecting it.
    with RU.open("rb") as fh:
        named = client.audio.translations.create(model="whisper-1", file=fh, extra_body={"language": "ru"})
    assert _says_ru(named.text), named.text
    with RU.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        client.audio.translations.create(model="whisper-1", file=fh, extra_body={"language": "xx"})
    assert err.value.code == "invalid_language"
    # The transcriptions endpoint on the same server still transcribes: the endpoint names the task.
    with RU.open("rb") as fh:
        spoken = client.audio.transcriptions.create(model="whisper-1", file=fh)
    assert any("\u0400" <= ch <= "\u04ff" for ch in spoken.text), spoken.text
    ids = {m.id for m in client.models.list()}
    assert ids == {"base", "whisper-1"}


def test_translations_every_response_format(base_server: Server) -> None:
    client = openai_client(base_server)

    def translate(fmt: str):
        with RU.open("rb") as fh:
            return client.audio.translations.create(model="whisper-1", file=fh, response_format=fmt)

    text = translate("text")
    assert isinstance(text, str) and _says_ru(text), text
    srt = translate("srt")
    assert srt.startswith("1\n") and " --> " in srt and _says_ru(srt), srt
    vtt = translate("vtt")
    assert vtt.startswith("WEBVTT") and _says_ru(vtt), vtt
    verbose = translate("verbose_json")
    assert verbose.language == "english" and verbose.duration == pytest.approx(5.67, abs=0.05)
    assert verbose.text.strip() == text.strip()
    assert verbose.segments and all(0 <= s.start < s.end <= verbose.duration + 1e-3 for s in verbose.segments)
    assert verbose.to_dict()["task"] == "translate"
    with RU.open("rb") as fh:
        r = httpx.post(
            f"{base_server.url}/v1/audio/translations",
            files={"file": ("ru.wav", fh)},
            data={"response_format": "slower_whisper_json"},
            timeout=120,
        )
    assert r.status_code == 200, r.text
    doc = r.json()
    # The document keeps the spoken language and records the task.
    assert doc["language"] == "ru" and doc["meta"]["task"] == "translate" and doc["meta"]["model"] == "base"
    assert doc["text"].strip() == text.strip()


def test_streamed_translation_ends_with_the_same_text(base_server: Server) -> None:
    with (
        RU.open("rb") as fh,
        httpx.stream(
            "POST",
            f"{base_server.url}/v1/audio/translations",
            files={"file": ("ru.wav", fh)},
            data={"stream": "true"},
            timeout=120,
        ) as r,
    ):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    with RU.open("rb") as fh:
        plain = openai_client(base_server).audio.translations.create(model="whisper-1", file=fh)
    assert events[-1]["type"] == "transcript.text.done" and events[-1]["text"] == plain.text
    assert "".join(e["delta"] for e in events[:-1]) == plain.text


def test_english_only_model_cannot_translate(main_server: Server) -> None:
    with JFK.open("rb") as fh, pytest.raises(openai.BadRequestError) as err:
        openai_client(main_server).audio.translations.create(model="whisper-1", file=fh)
    assert err.value.code == "unsupported_task"
    assert "English-only" in err.value.message and "tiny.en" in err.value.message
    assert main_server.uploads_left() == []
    # /v1/models is unchanged by the new endpoint.
    assert {m.id for m in openai_client(main_server).models.list()} == {"tiny.en", "whisper-1"}


# ------------------------------------------------------------------ the CLI


@pytest.mark.parametrize(
    "flags",
    [[], ["--throughput", "--batch-size", "2"]],
    ids=["per-file", "packed"],
)
def test_cli_task_translate(tmp_path: Path, flags: list[str]) -> None:
    add_input(tmp_path, RU)
    add_input(tmp_path, ZH)
    env = tiny_env(tmp_path, WHISPER_MODEL="base", WHISPER_LANGUAGE="auto")
    result = run_cli("transcribe", "--task", "translate", *flags, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ru = load_json(tmp_path / "whisper_json" / "ru.json")
    zh = load_json(tmp_path / "whisper_json" / "chinese.json")
    assert _says_ru(ru["text"]), ru["text"]
    assert _says_zh(zh["text"]), zh["text"]
    assert ru["language"] == "ru" and zh["language"] == "zh"
    assert ru["meta"]["task"] == zh["meta"]["task"] == "translate"
    assert _says_ru((tmp_path / "transcripts" / "ru.srt").read_text(encoding="utf-8"))


def test_cli_english_only_model_cannot_translate(tmp_path: Path) -> None:
    add_input(tmp_path, JFK)
    result = run_cli("transcribe", "--task", "translate", env=tiny_env(tmp_path))
    assert result.returncode == 2
    assert "English-only" in result.stderr and "WHISPER_TASK" in result.stderr
    assert not (tmp_path / "whisper_json").exists()

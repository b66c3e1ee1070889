"""Speakers through the HTTP service: `diarize` and the counts, OpenAI's `diarized_json` and known-speaker
references with the official client, jobs, and clear 400s for bad speaker input."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import httpx
import openai
import pytest
import service_support as support
from conftest import DATA
from service_support import Server, openai_client

pytestmark = [pytest.mark.timeout(300), pytest.mark.needs_data]
main_server = support.main_server

CALL = DATA / "multi_speaker" / "pyannote_sample" / "sample.wav"


def _wav_data_url(path: Path, start_s: float, end_s: float) -> str:
    """A slice of a 16 kHz mono WAV as a data URL, as a browser or OpenAI's docs build one."""
    with wave.open(str(path)) as src:
        rate = src.getframerate()
        src.setpos(int(start_s * rate))
        frames = src.readframes(int((end_s - start_s) * rate))
        params = src.getparams()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setparams(params)
        out.writeframes(frames)
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def _post_transcription(server: Server, fields: dict, audio: Path = CALL, endpoint: str = "transcriptions"):
    return support.post_audio(server, audio, fields, endpoint)


def test_diarized_json_with_the_openai_client(main_server: Server) -> None:
    client = openai_client(main_server)
    with CALL.open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="diarized_json",
            chunking_strategy="auto",
            extra_body={"min_speakers": "2"},  # the call's two voices are close (docs/speakers.md)
        )
    assert result.task == "transcribe" and result.duration == pytest.approx(30.0, abs=0.1)
    speakers = {s.speaker for s in result.segments}
    assert speakers == {"SPEAKER_00", "SPEAKER_01"}
    assert all(s.type == "transcript.text.segment" and s.end >= s.start for s in result.segments)
    assert " ".join(s.text for s in result.segments).split() == result.text.split()


def test_known_speaker_reference_names_the_speaker(main_server: Server) -> None:
    client = openai_client(main_server)
    diane = _wav_data_url(CALL, 10.6, 14.6)  # only Diane talks here (sample.rttm)
    with CALL.open("rb") as fh:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="diarized_json",
            chunking_strategy="auto",
            known_speaker_names=["Diane"],
            known_speaker_references=[diane],
            extra_body={"min_speakers": "2"},
        )
    labels = [s.speaker for s in result.segments]
    assert "Diane" in labels
    assert any(s.speaker == "Diane" and s.start <= 12.5 <= s.end + 1.0 for s in result.segments)


def test_full_document_and_counts(main_server: Server) -> None:
    r = _post_transcription(
        main_server, {"response_format": "slower_whisper_json", "diarize": "true", "num_speakers": "3"}
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert len(doc["speakers"]) == 3 and doc["turns"]
    assert all(seg["speaker"] for seg in doc["segments"])
    assert doc["meta"]["diarization"]["settings"]["num_speakers"] == 3


@pytest.mark.parametrize(
    "fields, code, words",
    [
        ({"diarize": "true", "min_speakers": "3", "max_speakers": "2"}, "invalid_value", "above"),
        ({"diarize": "true", "num_speakers": "99"}, "invalid_value", "num_speakers"),
        ({"num_speakers": "2"}, "invalid_value", "diarize"),
        (
            {
                "diarize": "true",
                "known_speaker_names[]": "Ann",
                "known_speaker_references[]": "data:audio/wav;base64,"
                + base64.b64encode(b"not audio").decode(),
            },
            "invalid_speaker_reference",
            "Ann",
        ),
        (
            {
                "diarize": "true",
                "known_speaker_names[]": "Ann",
                "known_speaker_references[]": "https://x/y.wav",
            },
            "invalid_speaker_reference",
            "data URL",
        ),
    ],
)
def test_bad_speaker_input_is_a_clear_400(main_server: Server, fields: dict, code: str, words: str) -> None:
    r = _post_transcription(main_server, fields, audio=support.JFK)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code and words in error["message"], error


def test_too_short_reference_is_refused(main_server: Server) -> None:
    short = _wav_data_url(CALL, 11.0, 12.0)
    r = _post_transcription(
        main_server,
        {
            "response_format": "diarized_json",
            "known_speaker_names[]": "Diane",
            "known_speaker_references[]": short,
        },
    )
    assert r.status_code == 400 and "2 to 10 seconds" in r.json()["error"]["message"]


def test_job_with_speakers_and_rttm_result(main_server: Server) -> None:
    with CALL.open("rb") as fh:
        r = httpx.post(
            f"{main_server.url}/v1/jobs",
            files={"file": ("call.wav", fh)},
            data={"diarize": "true", "min_speakers": "2"},
            headers=main_server.headers(),
            timeout=120,
        )
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    status = support.wait_job(main_server, job, timeout=200)
    assert status["status"] == "succeeded", status
    doc = httpx.get(
        f"{main_server.url}/v1/jobs/{job}/result?format=json", headers=main_server.headers()
    ).json()
    assert len(doc["speakers"]) == 2
    rttm = httpx.get(f"{main_server.url}/v1/jobs/{job}/result?format=rttm", headers=main_server.headers())
    assert rttm.status_code == 200 and rttm.text.startswith("SPEAKER ")
    vtt = httpx.get(f"{main_server.url}/v1/jobs/{job}/result?format=vtt", headers=main_server.headers()).text
    assert "<v SPEAKER_0" in vtt


def test_openai_error_type_for_speaker_errors(main_server: Server) -> None:
    client = openai_client(main_server)
    with CALL.open("rb") as fh, pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="diarized_json",
            chunking_strategy="auto",
            known_speaker_names=["A", "B"],
            known_speaker_references=["data:,"],
        )


@pytest.mark.parametrize("name", ["SPEAKER_01", "speaker_00", "SPEAKER 02"])
def test_a_name_like_a_generated_id_is_refused(main_server: Server, name: str) -> None:
    # Unmatched voices keep their generated SPEAKER_nn id: a reference named like one would merge two voices.
    r = _post_transcription(
        main_server,
        {
            "response_format": "diarized_json",
            "known_speaker_names[]": name,
            "known_speaker_references[]": _wav_data_url(CALL, 10.6, 14.6),
        },
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_speaker_reference" and error["param"] == "known_speaker_names", error
    assert name in error["message"] and "unnamed voices" in error["message"], error


def test_a_line_wrapped_base64_reference_is_accepted(main_server: Server) -> None:
    # As `base64` prints it: 76 characters a line; the data URL's payload may carry standard whitespace.
    url = _wav_data_url(CALL, 10.6, 14.6)
    header, payload = url.split(",", 1)
    wrapped = "\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    r = _post_transcription(
        main_server,
        {
            "response_format": "diarized_json",
            "min_speakers": "2",
            "known_speaker_names[]": "Diane",
            "known_speaker_references[]": f"{header},{wrapped}\r\n \t",
        },
    )
    assert r.status_code == 200, r.text
    assert "Diane" in {s["speaker"] for s in r.json()["segments"]}


@pytest.mark.parametrize("field", ["num_speakers", "min_speakers", "max_speakers"])
@pytest.mark.parametrize("value", ["\u0663", "\uff13", "3\u0663"])  # Arabic-Indic and full-width digits
def test_counts_take_ascii_digits_only(main_server: Server, field: str, value: str) -> None:
    r = _post_transcription(main_server, {"diarize": "true", field: value}, audio=support.JFK)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and "whole number" in error["message"], error


RU = DATA / "multilingual" / "ru" / "ru.wav"


@pytest.fixture(scope="module")
def base_server(tmp_path_factory: pytest.TempPathFactory):
    server = support.make_server(tmp_path_factory.mktemp("speakers-base"), "root", ENABLE_EMOTION="false")
    server.extra_args = ["--model", "base"]  # after the fixture's --model tiny.en: the last one counts
    yield from support.serve_module(server)


@pytest.mark.slow
def test_translation_in_diarized_json_reports_its_task(base_server: Server) -> None:
    r = _post_transcription(
        base_server, {"response_format": "diarized_json"}, audio=RU, endpoint="translations"
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "translate", body
    assert body["segments"] and all(s["speaker"].startswith("SPEAKER_") for s in body["segments"])

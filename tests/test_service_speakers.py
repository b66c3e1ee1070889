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
    with CALL.open("rb") as fh:
        r = httpx.post(
            f"{main_server.url}/v1/audio/transcriptions",
            files={"file": ("call.wav", fh)},
            data={"response_format": "slower_whisper_json", "diarize": "true", "num_speakers": "3"},
            headers=main_server.headers(),
            timeout=300,
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
    r = httpx.post(
        f"{main_server.url}/v1/audio/transcriptions",
        files={"file": ("jfk.flac", support.JFK.read_bytes())},
        data=fields,
        headers=main_server.headers(),
        timeout=120,
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code and words in error["message"], error


def test_too_short_reference_is_refused(main_server: Server) -> None:
    short = _wav_data_url(CALL, 11.0, 12.0)
    r = httpx.post(
        f"{main_server.url}/v1/audio/transcriptions",
        files={"file": ("call.wav", CALL.read_bytes())},
        data={
            "response_format": "diarized_json",
            "known_speaker_names[]": "Diane",
            "known_speaker_references[]": short,
        },
        headers=main_server.headers(),
        timeout=120,
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

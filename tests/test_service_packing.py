"""Throughput mode in the service: concurrent requests and jobs share packed inference batches.

A real server (tiny.en, CPU, `SLOWER_WHISPER_THROUGHPUT=true`, batch size 4) gets nine uploads at once, a
job, a request with a prompt (other decoding options, so other batches) and one without speech. Each answer
must equal the per-file batched CLI path on the same clip, and the batch metrics must show batches that mixed
several requests.
"""

from __future__ import annotations

import io
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import DATA, add_input, load_json, run_cli, tiny_env, wer
from service_support import JFK, Server, make_server, serve_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.needs_data]

CLIPS = [
    *sorted((DATA / "en_read" / "ljspeech").glob("*.wav"))[:6],
    *sorted((DATA / "en_read" / "librivox_sense_and_sensibility").glob("*.wav"))[:2],
    JFK,
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Texts from the per-file batched path with the same batch size."""
    root = tmp_path_factory.mktemp("packing-reference")
    for clip in CLIPS:
        add_input(root, clip)
    proc = run_cli("transcribe", "--batch-size", "4", env=tiny_env(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {load_json(p)["file"]: load_json(p)["text"] for p in (root / "whisper_json").glob("*.json")}


@pytest.fixture(scope="module")
def packing_server(tmp_path_factory: pytest.TempPathFactory):
    server = make_server(
        tmp_path_factory.mktemp("service-packing"),
        "root",
        SLOWER_WHISPER_THROUGHPUT="true",
        BATCH_SIZE="4",
        ENABLE_EMOTION="false",
    )
    yield from serve_module(server)


def _transcribe(server: Server, clip: Path) -> tuple[str, str]:
    with clip.open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": (clip.name, fh)},
            data={"response_format": "json"},
            timeout=300,
        )
    assert r.status_code == 200, r.text
    return clip.name, r.json()["text"]


def _prompted(server: Server) -> str:
    """A request whose prompt gives it other decoding options: its chunks get batches of their own."""
    with JFK.open("rb") as fh:
        r = httpx.post(
            f"{server.url}/v1/audio/transcriptions",
            files={"file": ("jfk.flac", fh)},
            data={"response_format": "text", "prompt": "President Kennedy's inaugural address."},
            timeout=300,
        )
    assert r.status_code == 200, r.text
    return r.text


def _silence(server: Server) -> dict:
    """Twenty seconds of low noise: no speech, so no chunk ever reaches the model for it."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(20 * 16000) * 30).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    r = httpx.post(
        f"{server.url}/v1/audio/transcriptions",
        files={"file": ("quiet.wav", buf.getvalue())},
        data={"response_format": "verbose_json"},
        timeout=300,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _job(server: Server, clip: Path) -> str:
    with clip.open("rb") as fh:
        r = httpx.post(f"{server.url}/v1/jobs", files={"file": (clip.name, fh)}, timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        record = httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()
        if record["status"] in ("succeeded", "failed"):
            assert record["status"] == "succeeded", record
            return httpx.get(f"{server.url}/v1/jobs/{job_id}/result", timeout=10).json()["text"]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_concurrent_requests_share_batches_and_equal_the_per_file_path(
    packing_server: Server, reference: dict[str, str]
) -> None:
    with ThreadPoolExecutor(len(CLIPS) + 3) as pool:
        job = pool.submit(_job, packing_server, JFK)
        prompted = pool.submit(_prompted, packing_server)
        quiet = pool.submit(_silence, packing_server)
        answers = dict(pool.map(lambda clip: _transcribe(packing_server, clip), CLIPS))
        job_text = job.result()
        prompted_text = prompted.result()
        quiet_answer = quiet.result()
    assert set(answers) == set(reference)
    names = sorted(reference)
    differing = [n for n in names if answers[n] != reference[n]]
    if differing:  # only floating-point effects of another batch composition may differ, and barely
        assert wer([reference[n] for n in names], [answers[n] for n in names]) <= 0.01, differing
    assert wer([reference["jfk.flac"]], [job_text]) <= 0.01
    assert wer([reference["jfk.flac"]], [prompted_text]) <= 0.15, prompted_text
    assert quiet_answer["text"] == "" and quiet_answer["segments"] == []
    assert quiet_answer["duration"] == pytest.approx(20.0, abs=0.01)

    # Every chunk went through the packer, and some batches mixed several requests.
    batches = packing_server.metric("slower_whisper_batch_requests_count")
    single = packing_server.metric("slower_whisper_batch_requests_bucket", {"le": "1.0"})
    chunks = packing_server.metric("slower_whisper_batch_chunks_sum")
    assert batches is not None and single is not None and chunks is not None
    assert chunks >= len(CLIPS) + 2
    assert batches > single, "no batch held chunks of more than one request"
    assert packing_server.metric("slower_whisper_batch_chunks_bucket", {"le": "4.0"}) == batches


def test_long_upload_is_packed_window_by_window_on_its_own_timeline(
    packing_server: Server, tmp_path: Path
) -> None:
    """A 12-minute upload (two transcription windows): speech at the start and at 711 s lands at its time."""
    from faster_whisper import decode_audio

    speech = decode_audio(str(JFK), sampling_rate=16000)
    rng = np.random.default_rng(1)
    gap = rng.standard_normal(700 * 16000).astype(np.float32) * 0.001
    samples = np.concatenate([speech, gap, speech])
    path = tmp_path / "long call.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    with path.open("rb") as fh:
        r = httpx.post(
            f"{packing_server.url}/v1/audio/transcriptions",
            files={"file": (path.name, fh)},
            data={"response_format": "verbose_json", "timestamp_granularities[]": "word"},
            timeout=300,
        )
    assert r.status_code == 200, r.text
    body = r.json()
    second = len(speech) / 16000 + 700
    assert body["duration"] == pytest.approx(second + len(speech) / 16000, abs=0.01)
    countries = [w["start"] for w in body["words"] if "country" in w["word"].lower()]
    assert len(countries) == 4, body["text"]  # twice in each copy of the speech
    first_copy, second_copy = countries[:2], countries[2:]
    assert all(t < 11.0 for t in first_copy)
    # The same words, 711 s later, within the tolerance of word timing.
    for a, b in zip(first_copy, second_copy, strict=True):
        assert b - a == pytest.approx(second, abs=0.5)

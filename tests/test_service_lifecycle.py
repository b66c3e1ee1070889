"""Start-up, shutdown and restart of real servers: refusal to bind open without a key, jobs that survive a
kill -9, SIGTERM during a request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO, tiny_env
from service_support import JFK, Server, free_port, kill_on_exit, make_server

pytestmark = pytest.mark.timeout(300)


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transcription", "serve", *args],
        cwd=REPO,
        env=env or tiny_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refuses_open_bind_without_key(tmp_path: Path) -> None:
    done = _serve("--root", str(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 2
    assert "SLOWER_WHISPER_API_KEY" in done.stderr and "--allow-unauthenticated" in done.stderr


def test_model_that_cannot_load_exits_2(tmp_path: Path) -> None:
    env = tiny_env(HF_HUB_OFFLINE="1")
    done = _serve(
        "--root",
        str(tmp_path),
        "--port",
        str(free_port()),
        "--model",
        str(tmp_path / "no-model"),
        "--device",
        "cpu",
        env=env,
    )
    assert done.returncode == 2, done.stderr[-2000:]


def _submit(server: Server) -> str:
    with JFK.open("rb") as fh:
        r = httpx.post(f"{server.url}/v1/jobs", files={"file": ("jfk.flac", fh)}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _status(server: Server, job_id: str) -> dict:
    return httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).json()


def _record(root: Path, job_id: str) -> dict:
    return json.loads((root / ".slower-whisper" / "jobs" / job_id / "job.json").read_text())


@pytest.mark.needs_data
def test_jobs_survive_kill_and_restart(tmp_path: Path) -> None:
    server = make_server(tmp_path, "root", SLOWER_WHISPER_WORKERS="1").start()
    try:
        done_before = _submit(server)
        deadline = time.monotonic() + 60
        while _status(server, done_before)["status"] != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.1)
        ids = [_submit(server) for _ in range(3)]
        deadline = time.monotonic() + 60
        while _status(server, ids[0])["status"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)
        server.stop(signal.SIGKILL)
        states = [_record(server.root, i)["status"] for i in ids]
        assert states[1:] == ["queued", "queued"], states

        server.port = free_port()
        server.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all(_status(server, i)["status"] in ("succeeded", "failed") for i in ids):
                break
            time.sleep(0.1)
        for job_id in [done_before, *ids]:
            record = _status(server, job_id)
            assert record["status"] == "succeeded", record
            r = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": "txt"})
            assert "country" in r.text.lower()
        if states[0] == "running":  # interrupted mid-way: it ran again
            assert _record(server.root, ids[0])["attempts"] == 2
        assert server.stop() == 0
    finally:
        kill_on_exit(server)


@pytest.mark.needs_data
def test_sigterm_lets_the_request_finish(tmp_path: Path) -> None:
    server = make_server(tmp_path, "root", SLOWER_WHISPER_WORKERS="1").start()
    try:
        result: dict[str, httpx.Response] = {}

        def request() -> None:
            with JFK.open("rb") as fh:
                result["r"] = httpx.post(
                    f"{server.url}/v1/audio/transcriptions",
                    files={"file": ("jfk.flac", fh)},
                    data={"response_format": "text"},
                    timeout=60,
                )

        thread = threading.Thread(target=request)
        thread.start()
        deadline = time.monotonic() + 30
        while server.metric("slower_whisper_inference_running") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        queued_job = _submit(server)  # waits behind the request; must stay queued on disk
        started = time.monotonic()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        thread.join(60)
        assert result["r"].status_code == 200 and "country" in result["r"].text.lower()
        assert server.stop(timeout=30) == 0
        assert time.monotonic() - started < 25
        assert server.uploads_left() == []
        assert _record(server.root, queued_job)["status"] == "queued"
    finally:
        kill_on_exit(server)

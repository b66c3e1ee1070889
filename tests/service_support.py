"""Real servers for the service tests: `slower-whisper serve` subprocesses on free loopback ports.

A support module (no tests); the service tests import from it. The main server is shared by every service
test module through a process-wide cache, so the model loads once.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import DATA, REPO, tiny_env

JFK = DATA / "en_read" / "jfk" / "jfk.flac"
API_KEYS = ("test-key-one", "test-key-two")
READY_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    root: Path
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    extra_args: list[str] = field(default_factory=list)
    wrapper: list[str] = field(default_factory=list)  # a command prefix, e.g. to run it as another host

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_key(self) -> str | None:
        key = self.env.get("SLOWER_WHISPER_API_KEY")
        return key.split(",")[0] if key else None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self, wait: bool = True) -> Server:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                sys.executable,
                "-m",
                "transcription",
                "serve",
                "--root",
                str(self.root),
                "--port",
                str(self.port),
                "--model",
                "tiny.en",
                "--device",
                "cpu",
                *self.extra_args,
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {READY_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return sample.value
        return None

    def uploads_left(self) -> list[Path]:
        """Upload files left on disk (each process keeps its own folder and a lease file beside it)."""
        folder = self.root / ".slower-whisper" / "uploads"
        while True:  # the server removes folders while we walk: walk again
            if not folder.exists():
                return []
            try:
                return sorted(p for p in folder.rglob("*") if p.is_file() and ".leases" not in p.parts)
            except FileNotFoundError:
                continue


def make_server(tmp: Path, name: str, **env_extra: str) -> Server:
    root = tmp / name
    root.mkdir(parents=True, exist_ok=True)
    env = tiny_env(None, **env_extra)
    env.pop("SLOWER_WHISPER_ROOT", None)
    return Server(root=root, port=free_port(), env=env, log_path=tmp / f"{name}.log")


_shared: dict[str, Server] = {}
_users = {"count": 0}


@pytest.fixture(scope="session")
def main_server(tmp_path_factory: pytest.TempPathFactory):
    """The shared server: API keys set, 2 workers, the default queue, no emotion model (no weights here).
    Started once for all modules."""
    if "main" not in _shared:
        tmp = tmp_path_factory.mktemp("service-main")
        server = make_server(
            tmp,
            "root",
            SLOWER_WHISPER_API_KEY=",".join(API_KEYS),
            SLOWER_WHISPER_WORKERS="2",
            ENABLE_EMOTION="false",
            # The tests' callback receiver listens on loopback, which callbacks may reach only when allowed.
            SLOWER_WHISPER_CALLBACK_ALLOW_INTERNAL="true",
        )
        _shared["main"] = server.start()
    _users["count"] += 1
    yield _shared["main"]
    _users["count"] -= 1
    if _users["count"] == 0:
        server = _shared.pop("main")
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def openai_client(server: Server, key: str | None = None, **kwargs):
    import openai

    return openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=key or server.api_key or "unused",
        max_retries=kwargs.pop("max_retries", 0),
        timeout=kwargs.pop("timeout", 120),
        **kwargs,
    )


def kill_on_exit(server: Server) -> None:
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


def serve_module(server: Server) -> Iterator[Server]:
    """Body of a module-scoped server fixture: start it, and at the end it must stop gracefully (exit 0);
    it is killed if it does not."""
    server.start()
    yield server
    try:
        assert server.stop() == 0, server.log()
    finally:
        kill_on_exit(server)


class CallbackReceiver:
    """A loopback HTTP server recording the JSON bodies POSTed to it (job callbacks)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/done"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def post_audio(server: Server, audio: Path, fields: dict, endpoint: str = "transcriptions") -> httpx.Response:
    """One multipart upload of `audio` with form `fields` to /v1/audio/<endpoint>."""
    with audio.open("rb") as fh:
        return httpx.post(
            f"{server.url}/v1/audio/{endpoint}",
            files={"file": (audio.name, fh)},
            data=fields,
            headers=server.headers(),
            timeout=300,
        )


def wait_job(server: Server, job_id: str, timeout: float = 120) -> dict:
    """The job's record once it has succeeded or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers()).json()
        if record["status"] in ("succeeded", "failed"):
            return record
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def sse_events(response: httpx.Response) -> Iterator[dict]:
    """The JSON payloads of a Server-Sent Events body, as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: ") :])


def stream_all(server: Server, audio: Path, timeout: float = 120) -> list[dict]:
    """Every event of one `stream=true` transcription of `audio`."""
    with (
        audio.open("rb") as fh,
        httpx.stream(
            "POST",
            f"{server.url}/v1/audio/transcriptions",
            files={"file": (audio.name, fh)},
            data={"stream": "true"},
            headers=server.headers(),
            timeout=timeout,
        ) as r,
    ):
        assert r.status_code == 200, r.read()
        return list(sse_events(r))

"""Two real `slower-whisper serve` replicas on one root, as the Deployment runs them under the HPA: jobs
accepted by one are shared out between both and each runs exactly once, any replica answers for any job,
and a replica killed mid-job has its job finished by the other once its lease is stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_support import JFK, CallbackReceiver, Server, kill_on_exit, make_server

pytestmark = [pytest.mark.timeout(180), pytest.mark.needs_data]

LEASE_TTL_S = 5.0
HEARTBEAT_S = max(1.0, LEASE_TTL_S / 4)  # how often a holder renews its lease (transcription.layout.Lease)
OTHER_HOST = "replica-a"


def _other_host_wrapper() -> list[str]:
    """A command prefix that runs replica A under another host name (its own UTS namespace), so that
    replica B, like a pod on another node, can only take A's leases over once they expire. Empty where
    unprivileged namespaces are not available: both replicas then share the host name and B takes over a
    dead A's lease at once (dead process on the same host)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    wrapper = [
        unshare,
        "--user",
        "--map-root-user",
        "--uts",
        "sh",
        "-c",
        'hostname "$0" && exec "$@"',
        OTHER_HOST,
    ]
    probe = subprocess.run([*wrapper, "hostname"], capture_output=True, text=True, timeout=10)
    return wrapper if probe.returncode == 0 and probe.stdout.strip() == OTHER_HOST else []


class Replicas:
    def __init__(self, a: Server, b: Server, hook: CallbackReceiver, other_host: bool, long: Path) -> None:
        self.a, self.b, self.hook, self.other_host = a, b, hook, other_host
        self.hook_url = hook.url
        self.long = long  # jfk three times over (33 s): a run long enough to act on while it runs

    def submit(self, server: Server, audio: Path = JFK) -> str:
        with audio.open("rb") as fh:
            r = httpx.post(
                f"{server.url}/v1/jobs",
                files={"file": (audio.name, fh)},
                data={"callback_url": self.hook_url},
                timeout=30,
            )
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def record(self, job_id: str) -> dict:
        return json.loads((self.a.root / ".slower-whisper" / "jobs" / job_id / "job.json").read_text())


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    env = {
        "SLOWER_WHISPER_WORKERS": "1",
        "SLOWER_WHISPER_LEASE_TTL": str(int(LEASE_TTL_S)),
        "SLOWER_WHISPER_CALLBACK_ALLOW_INTERNAL": "true",  # the callback receiver is on loopback
    }
    a = make_server(tmp, "root", **env)
    b = make_server(tmp, "root", **env)  # the same root: one shared volume
    b.log_path = tmp / "b.log"
    a.wrapper = _other_host_wrapper()
    long = tmp / "jfk_x3.flac"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-stream_loop", "2", "-i", str(JFK), "-ac", "1", "-ar", "16000", str(long)],
        check=True,
        timeout=60,
    )
    hook = CallbackReceiver()
    try:
        a.start(wait=False)
        b.start(wait=False)
        a.wait_ready()
        b.wait_ready()
        yield Replicas(a, b, hook, bool(a.wrapper), long)
        assert b.stop() == 0, b.log()
    finally:
        kill_on_exit(a)
        kill_on_exit(b)
        hook.close()


def _wait_final(server: Server, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    records: dict[str, dict] = {}
    while time.monotonic() < deadline:
        records = {i: httpx.get(f"{server.url}/v1/jobs/{i}", timeout=10).json() for i in ids}
        if all(r.get("status") in ("succeeded", "failed") for r in records.values()):
            return records
        time.sleep(0.2)
    raise AssertionError(f"jobs not finished in {timeout} s: {records}\n{server.log()}")


def _callbacks(hook: CallbackReceiver, ids: list[str], timeout: float = 15) -> Counter:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(ids) <= {r["id"] for r in hook.received}:
            break
        time.sleep(0.05)
    time.sleep(0.5)  # room for a duplicate to arrive
    return Counter(r["id"] for r in hook.received if r["id"] in ids)


def test_jobs_accepted_by_one_replica_run_once_on_both(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    assert a.proc is not None and b.proc is not None
    ids = [replicas.submit(a) for _ in range(6)]
    # B answers for jobs it never saw accepted: the records on the shared disk are the truth.
    records = _wait_final(b, ids, timeout=90)
    assert all(r["status"] == "succeeded" for r in records.values()), records
    workers = {i: r["worker"] for i, r in records.items()}
    pids = {int(w.rsplit(":", 1)[1]) for w in workers.values()}
    assert pids == {a.proc.pid, b.proc.pid}, workers  # both replicas ran some
    assert all(r["attempts"] == 1 for r in records.values()), records  # nobody ran a job twice
    if replicas.other_host:
        assert any(w.startswith(f"{OTHER_HOST}:") for w in workers.values()), workers
    assert _callbacks(replicas.hook, ids) == Counter(
        {i: 1 for i in ids}
    )  # one callback per job, from its runner only

    listed = {j["id"] for j in httpx.get(f"{b.url}/v1/jobs", timeout=10).json()["data"]}
    assert set(ids) <= listed
    r = httpx.get(f"{b.url}/v1/jobs/{ids[0]}/result", params={"format": "txt"}, timeout=10)
    assert r.status_code == 200 and "country" in r.text.lower()
    # Deleted through one replica, gone on both, files included.
    assert httpx.delete(f"{b.url}/v1/jobs/{ids[-1]}", timeout=10).json()["deleted"] is True
    assert httpx.get(f"{a.url}/v1/jobs/{ids[-1]}", timeout=10).status_code == 404
    assert not (a.root / ".slower-whisper" / "jobs" / ids[-1]).exists()


def test_delete_of_a_job_running_on_the_other_replica(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    assert a.proc is not None and b.proc is not None
    job_id = replicas.submit(a, replicas.long)
    deadline = time.monotonic() + 30
    while replicas.record(job_id)["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    record = replicas.record(job_id)
    assert record["status"] == "running", record
    runner, other = (a, b) if record["worker"].endswith(f":{a.proc.pid}") else (b, a)
    r = httpx.delete(f"{other.url}/v1/jobs/{job_id}", timeout=10)
    assert r.status_code == 200 and r.json()["deleted"] is True
    folder = a.root / ".slower-whisper" / "jobs" / job_id
    assert (folder / "deleted").exists()  # marked for its runner, which still holds it
    for server in (a, b):
        assert httpx.get(f"{server.url}/v1/jobs/{job_id}", timeout=10).status_code == 404
        assert job_id not in {j["id"] for j in httpx.get(f"{server.url}/v1/jobs", timeout=10).json()["data"]}
    deadline = time.monotonic() + 30
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not folder.exists(), runner.log()  # the runner discarded it when the run ended
    assert _callbacks(replicas.hook, [job_id], timeout=1)[job_id] == 0


def test_job_of_a_killed_replica_is_finished_by_the_other(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    assert a.proc is not None and b.proc is not None
    victim = None
    for _ in range(5):  # A claims a job it accepted at once; B only at its next scan, but it may win
        job_id = replicas.submit(a, replicas.long)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            record = replicas.record(job_id)
            if record["status"] == "running" and record["worker"].endswith(f":{a.proc.pid}"):
                victim = job_id
                break
            if record["status"] in ("succeeded", "failed") or record["worker"]:
                break
            time.sleep(0.01)
        if victim is not None:
            break
        _wait_final(b, [job_id], timeout=30)
    assert victim is not None, "replica A never ran a job"
    kill_on_exit(a)  # kill -9 mid-job: no shutdown code runs, the lease file stays behind
    killed_at = time.time()
    assert replicas.record(victim)["status"] == "running"

    record = _wait_final(b, [victim], timeout=60)[victim]
    assert record["status"] == "succeeded", record
    assert record["worker"].endswith(f":{b.proc.pid}") and record["attempts"] == 2, record
    if replicas.other_host:
        # Another host's lease cannot be judged by its pid: B waited for it to expire.
        assert record["started_at"] - killed_at >= LEASE_TTL_S - HEARTBEAT_S - 0.5, (record, killed_at)
    r = httpx.get(f"{b.url}/v1/jobs/{victim}/result", params={"format": "txt"}, timeout=10)
    assert "country" in r.text.lower()
    assert _callbacks(replicas.hook, [victim])[victim] == 1
    leases = b.root / ".slower-whisper" / "jobs" / ".leases"
    assert [p.name for p in leases.iterdir() if p.name.endswith(".lease")] == []  # B let go; A's went

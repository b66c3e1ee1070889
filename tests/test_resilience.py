"""Interrupted runs, two workers on one folder, shards, the watcher, and long files with flat memory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA, REPO, add_input, ffmpeg, load_json, run_cli, tiny_env

from transcription import schema

LJ = sorted((DATA / "en_read" / "ljspeech").glob("*.wav"))


def _spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "transcription", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _visible_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]


@pytest.mark.needs_data
def test_sigkill_mid_run_then_resume(tmp_path: Path) -> None:
    for wav in LJ[:6]:
        add_input(tmp_path, wav)
    proc = _spawn("transcribe", "--root", str(tmp_path), env=tiny_env())
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "whisper_json").glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.stem for p in (tmp_path / "whisper_json").glob("*.json")}
    assert 0 < len(finished) < 6
    # Whatever exists under a final name is complete and valid.
    for path in (tmp_path / "whisper_json").glob("*.json"):
        schema.validate(load_json(path))
    result = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env())
    assert result.returncode == 0, result.stderr
    report = load_json(tmp_path / ".slower-whisper" / "last-run.json")
    assert sorted(report["done"] + report["skipped"]) == sorted(w.name for w in LJ[:6])
    assert report["claimed_elsewhere"] == []  # the dead run's lease did not block the file
    assert sorted(p.stem for p in (tmp_path / "whisper_json").glob("*.json")) == sorted(
        w.stem for w in LJ[:6]
    )
    assert not list((tmp_path / ".slower-whisper" / "leases").iterdir())


@pytest.mark.needs_data
def test_two_workers_on_one_folder_never_duplicate(tmp_path: Path) -> None:
    for wav in LJ[:8]:
        add_input(tmp_path, wav)
    env = tiny_env()
    procs = [_spawn("transcribe", "--root", str(tmp_path), env=env) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    done: list[str] = []
    for run in (tmp_path / ".slower-whisper" / "runs").glob("*.json"):
        done += load_json(run)["done"]
    assert sorted(done) == sorted(w.name for w in LJ[:8]), "each file transcribed exactly once"


def test_shards_cover_every_file_once(tmp_path: Path) -> None:
    from transcription.layout import Layout
    from transcription.pipeline import in_shard

    for i in range(40):
        (tmp_path / "raw_audio" / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "raw_audio" / f"d{i % 3}" / f"f{i}.wav").write_bytes(b"x")
    inputs = Layout(tmp_path).discover()
    for n in (1, 2, 3, 7):
        owners = [[k for k in range(n) if in_shard(inp, (k, n))] for inp in inputs]
        assert all(len(o) == 1 for o in owners)


@pytest.mark.needs_data
def test_indexed_job_environment_selects_the_shard(tmp_path: Path) -> None:
    for wav in LJ[:5]:
        add_input(tmp_path, wav)
    done: list[str] = []
    for index in range(2):
        env = tiny_env(JOB_COMPLETION_INDEX=str(index), JOB_COMPLETION_COUNT="2")
        result = run_cli("transcribe", "--root", str(tmp_path), env=env)
        assert result.returncode == 0, result.stderr
        report = load_json(tmp_path / ".slower-whisper" / "last-run.json")
        assert report["shard"] == f"{index}/2"
        done += report["done"]
    assert sorted(done) == sorted(w.name for w in LJ[:5])
    result = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env(JOB_COMPLETION_INDEX="0"))
    assert result.returncode == 2 and "JOB_COMPLETION_COUNT" in result.stderr


def test_stale_lease_of_a_dead_worker_expires(tmp_path: Path) -> None:
    import json

    from transcription.layout import Lease

    lease = Lease(tmp_path, "a", ttl_s=60)
    assert lease.acquire()
    other = Lease(tmp_path, "a", ttl_s=60)
    assert not other.acquire()  # live holder in this process
    lease.release()
    # A holder on another host that stopped renewing: blocked until expiry, then taken over.
    lease.path.write_text(
        json.dumps({"token": "x", "host": "elsewhere", "pid": 1, "expires_at": time.time() + 60})
    )
    assert not other.acquire()
    lease.path.write_text(
        json.dumps({"token": "x", "host": "elsewhere", "pid": 1, "expires_at": time.time() - 1})
    )
    assert other.acquire()
    other.release()
    assert not lease.path.exists()


@pytest.mark.needs_data
def test_watch_waits_for_uploads_to_finish_and_stops_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "raw_audio").mkdir(parents=True)
    proc = _spawn("watch", "--root", str(tmp_path), "--interval", "0.5", env=tiny_env())
    try:
        data = (DATA / "en_read" / "jfk" / "jfk.flac").read_bytes()
        target = tmp_path / "raw_audio" / "upload.flac"
        with open(target, "wb") as fh:  # a slow upload: the watcher must not start on a partial file
            for i in range(0, len(data), len(data) // 6):
                fh.write(data[i : i + len(data) // 6])
                fh.flush()
                time.sleep(0.4)
        deadline = time.time() + 90
        out = tmp_path / "whisper_json" / "upload.json"
        while time.time() < deadline and not out.exists():
            time.sleep(0.2)
        assert out.exists(), proc.stderr.read() if proc.poll() is not None else "watch produced nothing"
        doc = load_json(out)
        assert "country" in doc["text"] and doc["duration"] == pytest.approx(11.0, abs=0.05)
        time.sleep(2)  # further scans must not redo it
        runs = [load_json(p) for p in (tmp_path / ".slower-whisper" / "runs").glob("*.json")]
        assert sum(r["done"].count("upload.flac") for r in runs) == 1
        assert not any(r["failed"] for r in runs), runs
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def _peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    code = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "transcription", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return int(result.stdout.strip().splitlines()[-1]) / 1024, result


@pytest.mark.needs_data
@pytest.mark.slow
def test_two_hour_file_memory_flat_and_no_drift(tmp_path: Path) -> None:
    """A 2-hour recording (speech once every 10 minutes) against a 30-minute one: the same peak memory, and
    every repeat of the speech found at its true time."""
    unit = tmp_path / "unit.flac"  # 11 s of JFK then silence, 600 s in all
    ffmpeg(
        "-i",
        str(DATA / "en_read" / "jfk" / "jfk.flac"),
        "-af",
        "apad=whole_dur=600",
        "-ar",
        "16000",
        "-ac",
        "1",
        str(unit),
    )
    (tmp_path / "short" / "raw_audio").mkdir(parents=True)
    (tmp_path / "long" / "raw_audio").mkdir(parents=True)
    ffmpeg("-stream_loop", "2", "-i", str(unit), str(tmp_path / "short" / "raw_audio" / "half_hour.flac"))
    ffmpeg("-stream_loop", "11", "-i", str(unit), str(tmp_path / "long" / "raw_audio" / "two_hours.flac"))
    env = tiny_env()
    short_mb, r1 = _peak_rss_mb(["transcribe", "--root", str(tmp_path / "short")], env)
    long_mb, r2 = _peak_rss_mb(["transcribe", "--root", str(tmp_path / "long")], env)
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    print(f"peak RSS: 30 min {short_mb:.0f} MB, 2 h {long_mb:.0f} MB")
    assert long_mb < short_mb + 60
    doc = load_json(tmp_path / "long" / "whisper_json" / "two_hours.json")
    assert doc["duration"] == pytest.approx(7200, abs=0.1)
    schema.validate(doc)
    firsts = [
        s for s in doc["segments"] if s["words"] and s["words"][0]["word"].strip().lower().startswith("and")
    ]
    starts = sorted(s["start"] for s in firsts)
    assert len(starts) == 12, [s["text"] for s in doc["segments"]]
    for k, start in enumerate(starts):
        assert abs(start - 600 * k) < 0.6, f"drift at repeat {k}: {start}"


@pytest.mark.needs_data
def test_watch_in_throughput_mode(tmp_path: Path) -> None:
    """The watcher uses the throughput mode's strategy too (on CPU: files in parallel)."""
    (tmp_path / "raw_audio").mkdir(parents=True)
    env = tiny_env(SLOWER_WHISPER_THROUGHPUT="true")
    proc = _spawn("watch", "--root", str(tmp_path), "--interval", "0.5", env=env)
    try:
        for wav in LJ[:3]:
            add_input(tmp_path, wav)
        deadline = time.time() + 120
        while time.time() < deadline and len(list((tmp_path / "whisper_json").glob("*.json"))) < 3:
            time.sleep(0.2)
        assert sorted(p.stem for p in (tmp_path / "whisper_json").glob("*.json")) == [w.stem for w in LJ[:3]]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert '"throughput mode"' in err

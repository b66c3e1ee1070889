"""A run's record of what it did: the identity of the decoded bytes, a missing root, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli, tiny_env

from transcription import document
from transcription.config import load_settings
from transcription.layout import Input, Layout


def test_a_source_replaced_while_it_is_read_is_not_recorded_as_decoded(tmp_path: Path) -> None:
    src = tmp_path / "call.wav"
    src.write_bytes(b"RIFF" + b"\0" * 4000)

    def replace_during_read() -> None:
        src.write_bytes(b"RIFF" + b"\1" * 100)

    with pytest.raises(document.SourceChanged, match="changed while it was read"):
        document.identify_while(src, replace_during_read)


def test_outputs_of_a_source_replaced_after_its_decode_are_stale(tmp_path: Path) -> None:
    """The recorded size, mtime and hash all describe the decoded bytes, so a replacement is never current
    (the fault: size and mtime were taken at write time, the hash at decode time)."""
    root = tmp_path / "root"
    layout = Layout(root)
    layout.ensure()
    src = layout.raw_audio / "a.wav"
    src.write_bytes(b"RIFF" + b"\0" * 4000)
    identity, _ = document.identify_while(src, lambda: None)
    src.write_bytes(b"RIFF" + b"\1" * 100)  # replaced while the model ran
    settings = load_settings({"root": str(root)}, None, tiny_env())
    doc = {
        "meta": {
            "config_fingerprint": document.config_fingerprint(settings),
            "source_size": identity.size,
            "source_mtime_ns": identity.mtime_ns,
            "source_sha256": identity.sha256,
        }
    }
    layout.json_path("a").write_text(json.dumps(doc))
    for fmt in ("txt", "srt", "vtt"):
        layout.text_path("a", fmt).write_text("")
    assert document.current(layout, Input(src, "a.wav", "a"), settings) is None
    # The same bytes touched (new mtime) are still current: the hash decides.
    src.write_bytes(b"RIFF" + b"\0" * 4000)
    os.utime(src, (1, 1))
    assert document.current(layout, Input(src, "a.wav", "a"), settings) is not None


def test_a_root_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "root"
    result = run_cli("transcribe", "--root", str(missing), env=tiny_env(), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr
    assert not missing.exists() and not missing.parent.exists()
    # An existing root gets its sub-folders created.
    existing = tmp_path / "root"
    existing.mkdir()
    assert run_cli("transcribe", "--root", str(existing), env=tiny_env(), timeout=120).returncode == 0
    assert (existing / "raw_audio").is_dir() and (existing / "whisper_json").is_dir()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_full_disk_while_the_run_report_is_written_fails_the_run_clearly(tmp_path: Path) -> None:
    root = tmp_path / "root"
    runs = root / ".slower-whisper" / "runs"
    runs.mkdir(parents=True)
    (root / "raw_audio").mkdir()
    last = root / ".slower-whisper" / "last-run.json"
    last.write_text('{"run_id": "an earlier run"}')
    env = tiny_env(root)
    # A private mount namespace: a 16 KiB tmpfs over runs/, filled, so only the report's write fails.
    script = (
        f'mount -t tmpfs -o size=16k tmpfs "{runs}" && '
        f'(head -c 65536 /dev/zero > "{runs}/filler" || true) && '
        f'exec "{sys.executable}" -m transcription transcribe'
    )
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user and mount namespaces unavailable: {probe.stderr.decode()[:200]}")
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "FAILED run report" in result.stderr
    assert "Traceback" not in result.stderr
    assert not last.exists(), "last-run.json must not keep describing the previous run"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--beam-size", "2147483648"], {}, "--beam-size"),
        (["--batch-size", "100000000000000000000"], {}, "--batch-size"),
        ([], {"BEAM_SIZE": "1e20"}, "BEAM_SIZE"),
        ([], {"SLOWER_WHISPER_WORKERS": "100000"}, "SLOWER_WHISPER_WORKERS"),
        ([], {"WHISPER_HALLUCINATION_SILENCE_THRESHOLD": "nan"}, "WHISPER_HALLUCINATION_SILENCE_THRESHOLD"),
        ([], {"SLOWER_WHISPER_LEASE_TTL": "99999999999"}, "SLOWER_WHISPER_LEASE_TTL"),
        (["--shard", "0/1000000"], {}, "--shard"),
    ],
)
def test_numeric_settings_out_of_range_stop_at_start_up(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    (tmp_path / "raw_audio").mkdir()
    result = run_cli("transcribe", "--root", str(tmp_path), *args, env=tiny_env(**env), timeout=60)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_watch_interval_must_be_a_positive_number_of_seconds(tmp_path: Path) -> None:
    for bad in ("0", "-1", "nan", "inf"):
        result = run_cli("watch", "--root", str(tmp_path), "--interval", bad, env=tiny_env(), timeout=60)
        assert result.returncode == 2, (bad, result.stderr)
        assert "--interval" in result.stderr


def test_an_english_only_model_is_refused_for_another_language(tmp_path: Path) -> None:
    (tmp_path / "raw_audio").mkdir()
    result = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env(WHISPER_LANGUAGE="ru"), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "English-only" in result.stderr
    # English and detection stay allowed.
    for ok in ("en", "auto"):
        env = tiny_env(WHISPER_LANGUAGE=ok)
        assert run_cli("transcribe", "--root", str(tmp_path), env=env).returncode == 0


def test_an_english_only_model_in_a_folder_of_any_name_is_refused_for_another_language(
    tmp_path: Path,
) -> None:
    """A local folder's name says nothing: the loaded model does."""
    from transcription import models

    settings = load_settings({}, None, tiny_env())
    folder = tmp_path / "my-model"
    shutil.copytree(models.resolve("tiny.en", settings), folder)
    root = tmp_path / "root"
    (root / "raw_audio").mkdir(parents=True)
    (root / "raw_audio" / "tone.wav").write_bytes(_tone_wav())
    env = tiny_env(root, WHISPER_MODEL=str(folder), WHISPER_LANGUAGE="de")
    result = run_cli("transcribe", env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "English-only" in result.stderr


def _tone_wav() -> bytes:
    import io
    import wave

    import numpy as np

    t = np.arange(16000) / 16000
    pcm = (0.2 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return buf.getvalue()

"""The batch run as users run it: a subprocess over a root folder, bad inputs included."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import DATA, add_input, ffmpeg, load_json, run_cli, tiny_env

from transcription import schema

JFK = DATA / "en_read" / "jfk" / "jfk.flac"
ODD_NAME = "call $(touch pwned) 'q' & ü 東京 #1.flac"


def _outputs(root: Path, stem: str) -> list[Path]:
    return [root / "whisper_json" / f"{stem}.json"] + [
        root / "transcripts" / f"{stem}.{e}" for e in ("txt", "srt", "vtt")
    ]


@pytest.mark.needs_data
def test_bad_inputs_are_isolated_and_reported(tmp_path: Path) -> None:
    root = tmp_path
    add_input(root, JFK, ODD_NAME)
    add_input(root, DATA / "multilingual" / "en_digits" / "english.wav", "sub dir/english.wav")
    (root / "raw_audio" / "empty.wav").write_bytes(b"")
    (root / "raw_audio" / "notes.mp3").write_text("this is a text file, not audio\n")
    (root / "raw_audio" / "corrupt.flac").write_bytes(os.urandom(4096))
    (root / "raw_audio" / "README.txt").write_text("ignored: not media")
    result = run_cli("transcribe", "--root", str(root), env=tiny_env())
    assert result.returncode == 1, result.stderr
    for bad in ("empty.wav", "notes.mp3", "corrupt.flac"):
        assert f"FAILED {bad}" in result.stderr
    report = load_json(root / ".slower-whisper" / "last-run.json")
    assert sorted(f["file"] for f in report["failed"]) == ["corrupt.flac", "empty.wav", "notes.mp3"]
    assert "empty" in next(f["error"] for f in report["failed"] if f["file"] == "empty.wav")
    assert sorted(report["done"]) == sorted([ODD_NAME, "sub dir/english.wav"])
    assert not (REPO_PWNED := Path("pwned")).exists() and not (root / "pwned").exists(), REPO_PWNED
    # Failures are machine-readable, one file each.
    failures = [load_json(p) for p in (root / ".slower-whisper" / "failures").glob("*.json")]
    assert sorted(f["file"] for f in failures) == ["corrupt.flac", "empty.wav", "notes.mp3"]
    # No output at all for a failed input.
    for bad in ("empty", "notes", "corrupt"):
        assert not any(p.exists() for p in _outputs(root, bad))
    stem = ODD_NAME.rsplit(".", 1)[0]
    doc = load_json(root / "whisper_json" / f"{stem}.json")
    schema.validate(doc)
    assert doc["file"] == ODD_NAME
    assert "country" in doc["text"]
    assert load_json(root / "whisper_json" / "sub dir" / "english.json")["file"] == "sub dir/english.wav"
    for line in json.loads("[" + ",".join(result.stderr.splitlines()[:-3]) + "]"):  # JSON log lines
        assert {"ts", "level", "msg"} <= set(line)


@pytest.mark.needs_data
def test_rerun_skips_current_and_redoes_on_change(tmp_path: Path) -> None:
    add_input(tmp_path, JFK)
    env = tiny_env()
    assert run_cli("transcribe", "--root", str(tmp_path), env=env).returncode == 0
    first = load_json(tmp_path / "whisper_json" / "jfk.json")
    again = run_cli("transcribe", "--root", str(tmp_path), env=env)
    assert again.returncode == 0
    report = load_json(tmp_path / ".slower-whisper" / "last-run.json")
    assert report["skipped"] == ["jfk.flac"] and report["done"] == []
    assert '"model loaded"' not in again.stderr  # nothing to do: the model is not even loaded
    # A touched but identical file is still current (content hash); changed settings redo it.
    os.utime(tmp_path / "raw_audio" / "jfk.flac", (time.time() + 5, time.time() + 5))
    run_cli("transcribe", "--root", str(tmp_path), env=env)
    assert load_json(tmp_path / ".slower-whisper" / "last-run.json")["skipped"] == ["jfk.flac"]
    run_cli("transcribe", "--root", str(tmp_path), "--language", "en", "--beam-size", "1", env=env)
    report = load_json(tmp_path / ".slower-whisper" / "last-run.json")
    assert report["done"] == ["jfk.flac"]
    second = load_json(tmp_path / "whisper_json" / "jfk.json")
    assert second["meta"]["config_fingerprint"] != first["meta"]["config_fingerprint"]
    assert second["meta"]["beam_size"] == 1
    run_cli("transcribe", "--root", str(tmp_path), "--language", "en", "--beam-size", "1", "--force", env=env)
    assert load_json(tmp_path / ".slower-whisper" / "last-run.json")["done"] == ["jfk.flac"]
    # Changed content redoes it too.
    add_input(tmp_path, DATA / "multilingual" / "en_digits" / "english.wav", "jfk.flac")
    run_cli("transcribe", "--root", str(tmp_path), "--language", "en", "--beam-size", "1", env=env)
    assert "three" in load_json(tmp_path / "whisper_json" / "jfk.json")["text"].lower()


@pytest.mark.needs_data
def test_same_stem_inputs_do_not_overwrite(tmp_path: Path) -> None:
    add_input(tmp_path, JFK, "talk.flac")
    ffmpeg(
        "-i",
        str(DATA / "multilingual" / "en_digits" / "english.wav"),
        str(tmp_path / "raw_audio" / "talk.mp3"),
    )
    assert run_cli("transcribe", "--root", str(tmp_path), env=tiny_env()).returncode == 0
    a = load_json(tmp_path / "whisper_json" / "talk.flac.json")
    b = load_json(tmp_path / "whisper_json" / "talk.mp3.json")
    assert a["file"] == "talk.flac" and "country" in a["text"]
    assert b["file"] == "talk.mp3" and "three" in b["text"].lower()
    assert (tmp_path / "input_audio" / "talk.flac.wav").is_file()
    assert (tmp_path / "input_audio" / "talk.mp3.wav").is_file()


@pytest.mark.needs_data
def test_video_container_and_formats(tmp_path: Path) -> None:
    """A video (mp4 with an audio track) is decoded like any audio; the text outputs agree with the JSON."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=64x64:d=11",
        "-i",
        str(JFK),
        "-shortest",
        "-c:v",
        "libx264" if _has_encoder("libx264") else "mpeg4",
        "-c:a",
        "aac",
        str(tmp_path / "clip.mp4"),
    )
    add_input(tmp_path, tmp_path / "clip.mp4")
    assert run_cli("transcribe", "--root", str(tmp_path), env=tiny_env()).returncode == 0
    doc = load_json(tmp_path / "whisper_json" / "clip.json")
    assert "country" in doc["text"]
    wav = tmp_path / "input_audio" / "clip.wav"
    import wave

    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
    srt = (tmp_path / "transcripts" / "clip.srt").read_text()
    vtt = (tmp_path / "transcripts" / "clip.vtt").read_text()
    txt = (tmp_path / "transcripts" / "clip.txt").read_text()
    assert vtt.startswith("WEBVTT")
    assert srt.count("-->") == vtt.count("-->") == len(doc["segments"]) == len(txt.splitlines())
    assert "00:00:00,000 --> " in srt


def _has_encoder(name: str) -> bool:
    import subprocess

    out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return f" {name} " in out


def test_silence_gives_no_text_and_a_flag(tmp_path: Path) -> None:
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=30:c=pink:a=0.0005:r=16000", str(tmp_path / "quiet.wav"))
    add_input(tmp_path, tmp_path / "quiet.wav")
    for vad in ("--vad", "--no-vad"):
        result = run_cli("transcribe", "--root", str(tmp_path), vad, "--force", env=tiny_env())
        assert result.returncode == 0, result.stderr
        doc = load_json(tmp_path / "whisper_json" / "quiet.json")
        words = doc["text"].split()
        assert len(words) <= 2, f"hallucinated on silence with {vad}: {doc['text']!r}"
        if not doc["segments"]:
            assert "no speech detected" in doc["meta"]["warnings"]


@pytest.mark.needs_data
def test_config_errors_exit_2_naming_the_setting(tmp_path: Path) -> None:
    add_input(tmp_path, JFK)
    cases = {
        "WHISPER_DEVICE": "gpu",
        "BATCH_SIZE": "0",
        "WHISPER_LANGUAGE": "xx",
        "BEAM_SIZE": "many",
        "ENABLE_AUDIO_ENRICHMENT": "maybe",
        "WHISPER_COMPUTE_TYPE": "float8",
    }
    for var, value in cases.items():
        result = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env(**{var: value}))
        assert result.returncode == 2, (var, result.stderr)
        assert var in result.stderr
    result = run_cli("transcribe", "--root", str(tmp_path), "--batch-size", "0", env=tiny_env())
    assert result.returncode == 2 and "--batch-size" in result.stderr
    result = run_cli("transcribe", "--root", str(tmp_path), "--shard", "3/2", env=tiny_env())
    assert result.returncode == 2 and "shard" in result.stderr
    result = run_cli("transcribe", "--bogus", env=tiny_env())
    assert result.returncode == 2
    assert not (tmp_path / "whisper_json").exists()  # nothing done


@pytest.mark.needs_data
def test_missing_model_exits_2_with_the_fix(tmp_path: Path) -> None:
    add_input(tmp_path, JFK)
    env = tiny_env(WHISPER_MODEL="large-v3", HF_HOME=str(tmp_path / "empty-cache"))
    result = run_cli("transcribe", "--root", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "slower-whisper models download large-v3" in result.stderr
    assert not (tmp_path / "whisper_json" / "jfk.json").exists()


@pytest.mark.needs_data
def test_read_only_output_folder(tmp_path: Path) -> None:
    import subprocess

    import pytest

    add_input(tmp_path, JFK)
    target = tmp_path / "transcripts"
    target.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("running as root without permission to mount a read-only tmpfs")
        target.chmod(0o555)
    try:
        result = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env())
    finally:
        if mounted:
            subprocess.run(["umount", str(target)], check=True)
    assert result.returncode == 2
    assert "cannot write" in result.stderr and "transcripts" in result.stderr


@pytest.mark.needs_data
def test_batched_inference_with_and_without_vad(tmp_path: Path) -> None:
    from conftest import wer

    add_input(tmp_path, JFK)
    add_input(tmp_path, DATA / "multi_speaker" / "pyannote_sample" / "sample.wav")
    reference = (DATA / "en_read" / "jfk" / "jfk.txt").read_text()
    for vad in ("--vad", "--no-vad"):
        result = run_cli(
            "transcribe", "--root", str(tmp_path), "--batch-size", "4", vad, "--force", env=tiny_env()
        )
        assert result.returncode == 0, result.stderr
        doc = load_json(tmp_path / "whisper_json" / "jfk.json")
        schema.validate(doc)
        assert doc["meta"]["batch_size"] == 4
        assert wer([reference], [doc["text"]]) < 0.1
        call = load_json(tmp_path / "whisper_json" / "sample.json")
        schema.validate(call)
        assert len(call["segments"]) >= 3  # timed segments inside each batched chunk, not one per chunk
        assert all(s["words"] for s in call["segments"])


def _screen(raw: str) -> list[str]:
    """The lines a terminal shows for `raw`: each carriage return rewrites from the line's start, ESC[2K
    erases it."""
    shown = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        buf = ""
        for piece in line.split("\r"):
            if piece.startswith("\x1b[2K"):
                buf, piece = "", piece[len("\x1b[2K") :]
            buf = piece + buf[len(piece) :]
        shown.append(buf)
    return shown


def test_progress_bar_keeps_its_own_line_under_the_log_and_reaches_its_end(tmp_path: Path) -> None:
    import pty
    import subprocess
    import sys

    from conftest import REPO

    add_input(tmp_path, DATA / "en_read" / "jfk" / "jfk.flac")
    add_input(tmp_path, DATA / "en_read" / "ljspeech" / "LJ001-0001.wav")
    try:
        primary, secondary = pty.openpty()  # stderr on a terminal: the bar is drawn
    except OSError as exc:  # a chroot without /dev/pts has none to give
        pytest.skip(f"no pseudo-terminal on this machine ({exc})")
    proc = subprocess.Popen(
        [sys.executable, "-m", "transcription", "transcribe", "--root", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env=tiny_env(LOG_FORMAT="text"),
        cwd=REPO,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closes when the process exits
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert proc.wait(timeout=600) == 0
    lines = _screen(b"".join(chunks).decode("utf-8", "replace"))
    bars = [line for line in lines if line.startswith("[")]
    logged = [line for line in lines if line.startswith("info")]
    assert sum("transcribed" in line for line in logged) == 2, lines
    assert not any("[" in line and "#" in line for line in logged), lines  # no bar on a log line
    assert not any("info" in line for line in bars), lines
    assert bars and bars[-1].startswith("[" + "#" * 30 + "] 2/2"), lines  # the bar ends full, at 2 of 2
    done = max(i for i, line in enumerate(lines) if line.startswith("info") and "transcribed" in line)
    assert lines.index(bars[-1]) > done  # under the log lines of the files it counts

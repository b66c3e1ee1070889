"""Hardening of input discovery (issue #11): file names that are not UTF-8, and links (loops, links
back into the root's generated folders, data linked in from outside)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA, REPO, load_json, run_cli, tiny_env

from transcription import schema
from transcription.layout import Layout, atomic_write_json

JFK = DATA / "en_read" / "jfk" / "jfk.flac"
BAD = os.fsdecode(b"caf\xe9 \xff.flac")  # Latin-1 bytes: not UTF-8; Python holds them surrogate-escaped
BAD_SHOWN = "caf\\xe9 \\xff.flac"
BROKEN = os.fsdecode(b"broken\xfe.flac")


def _strict_json(path: Path) -> dict:
    return json.loads(path.read_bytes().decode("utf-8"))  # strict: no lone surrogates, valid UTF-8


@pytest.mark.timeout(300)  # before the fix the links made the walk explode
def test_non_utf8_names_and_a_link_to_the_root_in_a_real_run(tmp_path: Path) -> None:
    raw = tmp_path / "raw_audio"
    raw.mkdir()
    shutil.copyfile(JFK, raw / "a.flac")
    shutil.copyfile(JFK, raw / BAD)
    (raw / BROKEN).write_bytes(os.urandom(4096))
    shutil.copyfile(JFK, raw / "z.flac")
    (raw / "up").symlink_to("..")  # the root: its input_audio/ fills with WAVs after the first run
    (raw / "loop").symlink_to(".")

    first = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env(), timeout=120)
    assert first.returncode == 1, first.stderr  # one failed input, the rest done: not a crash
    assert not any(line.startswith("Traceback") for line in first.stderr.splitlines())  # no crash
    assert "FAILED broken\\xfe.flac" in first.stderr
    report = _strict_json(tmp_path / ".slower-whisper" / "last-run.json")
    assert report["inputs"] == 4
    assert sorted(report["done"]) == ["a.flac", BAD_SHOWN, "z.flac"]
    assert [f["file"] for f in report["failed"]] == ["broken\\xfe.flac"]
    failures = [_strict_json(p) for p in (tmp_path / ".slower-whisper" / "failures").glob("*.json")]
    assert [f["file"] for f in failures] == ["broken\\xfe.flac"]
    doc = _strict_json(tmp_path / "whisper_json" / "caf\\xe9 \\xff.json")
    schema.validate(doc)
    assert doc["file"] == BAD_SHOWN and "country" in doc["text"]
    assert (tmp_path / "transcripts" / "caf\\xe9 \\xff.srt").is_file()
    for line in first.stderr.splitlines():
        if line.startswith("{"):
            json.loads(line.encode("utf-8").decode("utf-8"))  # every log line is valid UTF-8 JSON

    # The second run sees the same four inputs, not the first run's WAVs through `up`.
    second = run_cli("transcribe", "--root", str(tmp_path), env=tiny_env(), timeout=120)
    assert second.returncode == 1, second.stderr
    report = _strict_json(tmp_path / ".slower-whisper" / "last-run.json")
    assert report["inputs"] == 4 and report["done"] == []
    assert sorted(report["skipped"]) == ["a.flac", BAD_SHOWN, "z.flac"]
    assert sorted(p.name for p in (tmp_path / "whisper_json").iterdir()) == [
        "a.json",
        "caf\\xe9 \\xff.json",
        "z.json",
    ]


def test_watcher_survives_a_non_utf8_name(tmp_path: Path) -> None:
    raw = tmp_path / "raw_audio"
    raw.mkdir()
    shutil.copyfile(JFK, raw / BAD)
    shutil.copyfile(JFK, raw / "later.flac")
    proc = subprocess.Popen(
        [sys.executable, "-m", "transcription", "watch", "--root", str(tmp_path), "--interval", "0.3"],
        env=tiny_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        outs = [tmp_path / "whisper_json" / "later.json", tmp_path / "whisper_json" / "caf\\xe9 \\xff.json"]
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not all(p.exists() for p in outs):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert all(p.exists() for p in outs)
        assert _strict_json(outs[1])["file"] == BAD_SHOWN
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.mark.timeout(30)
def test_discover_walks_each_real_folder_once_and_never_the_roots_own(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "mounted"
    _tree(outside, ["m1.wav", "deep/m2.wav"])
    _tree(
        root,
        [
            "raw_audio/a.wav",
            "raw_audio/real/b.wav",
            "raw_audio/real/inner/c.wav",
            "input_audio/a.wav",
            "transcripts/x.wav",
            "whisper_json/y.wav",
            ".slower-whisper/jobs/j1/upload.wav",
            "elsewhere_in_root/e.wav",
        ],
    )
    raw = root / "raw_audio"
    links = {
        "up": "..",  # the root: never walked
        "loop": ".",  # raw_audio itself: already walked
        "again": "real",  # a folder walked already under its real name
        "a_first/inner_link": "../real/inner",  # sorts before real/ yet real/inner keeps its real name
        "gen": "../input_audio",  # generated folders, whatever the link's name
        "state": "../.slower-whisper",
        "wav_link.wav": "../input_audio/a.wav",  # a file link into our own outputs
        "same.wav": "a.wav",  # another name for a file already found
        "mounted": str(outside),  # data linked in from outside the root: followed
        "dangling.wav": "missing.wav",  # kept, so the run reports it
    }
    for name, target in links.items():
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).symlink_to(target)
    (outside / "back").symlink_to(raw)  # a loop through the outside folder
    (outside / "root_link").symlink_to(root)

    got = {i.rel: i.stem for i in Layout(root).discover()}
    assert got == {
        "a.wav": "a",
        "dangling.wav": "dangling",
        "mounted/deep/m2.wav": "mounted/deep/m2",
        "mounted/m1.wav": "mounted/m1",
        "real/b.wav": "real/b",
        "real/inner/c.wav": "real/inner/c",
    }
    # The same after a run has filled the generated folders more.
    _tree(root, ["input_audio/real/b.wav", "whisper_json/more.wav"])
    assert {i.rel for i in Layout(root).discover()} == set(got)


def test_escaped_name_never_takes_a_real_names_outputs(tmp_path: Path) -> None:
    raw = tmp_path / "raw_audio"
    raw.mkdir()
    (raw / os.fsdecode(b"a\xff.wav")).write_bytes(b"x")
    (raw / "a\\xff.wav").write_bytes(b"y")  # a real backslash: shown the same way
    inputs = Layout(tmp_path).discover()
    assert [i.rel for i in inputs] == ["a\\xff.wav", "a\\xff.wav"]
    assert len({i.stem for i in inputs}) == 2
    assert {i.path.read_bytes() for i in inputs} == {b"x", b"y"}


def test_json_records_with_undecodable_text_are_written_as_valid_utf8(tmp_path: Path) -> None:
    # An error message can carry the raw name (`ffmpeg: ...caf\udce9...`): the record must still be written.
    atomic_write_json(tmp_path / "r.json", {"error": f"cannot read {BAD}", "files": [BAD]})
    assert _strict_json(tmp_path / "r.json") == {
        "error": f"cannot read {BAD_SHOWN}",
        "files": [BAD_SHOWN],
    }
    assert load_json(tmp_path / "r.json")["files"] == [BAD_SHOWN]

"""Throughput mode (`--throughput`): chunks of many files share batches; results equal the per-file path.

Real tiny.en on real clips: the 16 LJSpeech sentences, 5 LibriVox sentences and JFK (142 s). A corrupt file
and a file leased by another worker ride along in the packed run and must not disturb the others.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from conftest import add_input, load_json, run_cli, tiny_env, wer

from transcription import schema
from transcription.layout import Layout, Lease


def _clips(data: Path) -> list[Path]:
    read = data / "en_read"
    return [
        *sorted((read / "ljspeech").glob("*.wav")),
        *sorted((read / "librivox_sense_and_sensibility").glob("*.wav")),
        read / "jfk" / "jfk.flac",
    ]


def _texts(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted((root / "whisper_json").glob("*.json")):
        doc = load_json(path)
        out[doc["file"]] = doc["text"]
    return out


@pytest.fixture(scope="module")
def per_file_root(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """The reference: the per-file batched path with the same batch size."""
    root = tmp_path_factory.mktemp("per_file")
    for clip in _clips(data):
        add_input(root, clip)
    proc = run_cli("transcribe", "--batch-size", "4", env=tiny_env(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def packed_run(tmp_path_factory: pytest.TempPathFactory, data: Path) -> tuple[Path, object, Lease]:
    root = tmp_path_factory.mktemp("packed")
    for clip in _clips(data):
        add_input(root, clip)
    # A damaged file among good ones: a real FLAC's header followed by garbage.
    head = (data / "en_read/jfk/jfk.flac").read_bytes()[:8192]
    (root / "raw_audio" / "zz_corrupt.flac").write_bytes(head + bytes(range(256)) * 40)
    (root / "raw_audio" / "not_audio.mp3").write_bytes(b"this is text, not audio\n" * 50)
    # A file another live worker holds: a lease taken by this (live) test process.
    add_input(root, data / "multilingual/en_digits/english.wav", "held.wav")
    layout = Layout(root)
    layout.ensure()
    lease = Lease(layout.leases, "held", ttl_s=600)
    assert lease.acquire()
    proc = run_cli("transcribe", "--batch-size", "4", "--throughput", env=tiny_env(root))
    return root, proc, lease


def test_packed_documents_validate_and_equal_per_file_batched(per_file_root: Path, packed_run) -> None:
    root, proc, _ = packed_run
    assert proc.returncode == 1, proc.stderr[-3000:]  # two inputs failed, the rest are done
    reference, packed = _texts(per_file_root), _texts(root)
    assert set(reference) == set(packed) and len(packed) == 22
    for path in (root / "whisper_json").glob("*.json"):
        doc = load_json(path)
        schema.validate(doc)
        assert doc["segments"] and doc["language"] == "en"
        assert doc["meta"]["batch_size"] == 4
        assert all((root / "transcripts" / f"{path.stem}.{fmt}").is_file() for fmt in ("txt", "srt", "vtt"))
    differing = [name for name in reference if reference[name] != packed[name]]
    if differing:  # only floating-point effects of another batch composition may differ, and barely
        names = sorted(reference)
        assert wer([reference[n] for n in names], [packed[n] for n in names]) <= 0.01, differing
    # Word timings survive packing and land on each file's own timeline.
    jfk = load_json(root / "whisper_json" / "jfk.json")
    words = [w for s in jfk["segments"] for w in s["words"]]
    assert len(words) >= 20 and 0 <= words[0]["start"] < 1.5 and 9.0 < words[-1]["end"] <= jfk["duration"]
    ref_jfk = load_json(per_file_root / "whisper_json" / "jfk.json")
    ref_words = [w for s in ref_jfk["segments"] for w in s["words"]]
    assert [w["word"] for w in words] == [w["word"] for w in ref_words]
    assert max(abs(a["start"] - b["start"]) for a, b in zip(words, ref_words, strict=True)) < 0.05


def test_packed_failures_are_isolated(packed_run) -> None:
    root, _, _ = packed_run
    report = json.loads((root / ".slower-whisper" / "last-run.json").read_text())
    failed = {entry["file"]: entry for entry in report["failed"]}
    assert set(failed) == {"zz_corrupt.flac", "not_audio.mp3"}
    assert all(entry["type"] == "decode" for entry in failed.values())
    assert len(report["done"]) == 22
    assert not (root / "whisper_json" / "zz_corrupt.json").exists()
    # Every lease this run took is released; only the foreign one remains.
    leases = list((root / ".slower-whisper" / "leases").glob("*.lease"))
    assert len(leases) == 1 and json.loads(leases[0].read_text())["key"] == "held"


def test_packed_respects_a_foreign_lease(packed_run) -> None:
    root, _, lease = packed_run
    report = json.loads((root / ".slower-whisper" / "last-run.json").read_text())
    assert report["claimed_elsewhere"] == ["held.wav"]
    assert not (root / "whisper_json" / "held.json").exists()
    lease.release()
    # Once released, the next run takes it and skips everything already done.
    proc = run_cli("transcribe", "--batch-size", "4", "--throughput", env=tiny_env(root))
    assert proc.returncode == 1  # the two broken inputs still fail
    report = json.loads((root / ".slower-whisper" / "last-run.json").read_text())
    assert report["done"] == ["held.wav"] and len(report["skipped"]) == 22
    doc = load_json(root / "whisper_json" / "held.json")
    assert wer(["one two three"], [doc["text"]]) == 0.0


def test_stop_finishes_started_files_and_gives_back_the_rest(tmp_path: Path, data: Path) -> None:
    from transcription import config, pipeline, throughput
    from transcription.asr import Engine

    for clip in _clips(data)[:8]:
        add_input(tmp_path, clip)
    settings = config.load_settings(
        {"root": tmp_path, "model": "tiny.en", "device": "cpu", "batch_size": 2, "throughput": True},
        environ={"HF_HUB_OFFLINE": "1"},
    )
    layout = pipeline.prepare_root(settings)
    report = pipeline._new_report("transcribe", None)
    processor = pipeline.Processor(Engine.load(settings), settings, layout, report)
    stop = threading.Event()
    started: list[str] = []

    def progress(n: int, inp) -> None:
        started.append(inp.rel)
        if n == 2:
            stop.set()

    try:
        throughput.run_packed(processor, layout.discover(), stop, progress)
    finally:
        processor.close()
    assert 1 <= len(report.done) < 8 and not report.failed
    assert set(report.done) <= set(started)
    assert sorted(p.stem for p in (tmp_path / "whisper_json").glob("*.json")) == sorted(
        Path(r).stem for r in report.done
    )
    assert not list(layout.leases.glob("*.lease"))  # every claim, started or not, was given back


@pytest.mark.slow
def test_packed_detects_language_per_file_like_the_per_file_path(tmp_path: Path, data: Path) -> None:
    """Multilingual base model, no language set: one detection per file, equal to the per-file path."""
    clips = [
        data / "multilingual/ru/ru.wav",
        data / "multilingual/zh/chinese.flac",
        data / "en_read/jfk/jfk.flac",
        data / "multilingual/en_digits/english.wav",
    ]
    results = {}
    for mode in ("per_file", "packed"):
        root = tmp_path / mode
        for clip in clips:
            add_input(root, clip)
        args = ["transcribe", "--model", "base", "--batch-size", "4"]
        if mode == "packed":
            args.append("--throughput")
        proc = run_cli(*args, env=tiny_env(root, WHISPER_MODEL="base"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[mode] = {
            p.stem: (d["language"], d["text"])
            for p in (root / "whisper_json").glob("*.json")
            if (d := load_json(p))
        }
    assert results["packed"] == results["per_file"]
    assert results["packed"]["ru"][0] == "ru" and results["packed"]["chinese"][0] == "zh"
    assert results["packed"]["jfk"][0] == "en"
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_parallel_files_on_cpu_equal_the_per_file_path(tmp_path: Path, data: Path) -> None:
    """CPU, no batch size: files run in parallel, one per core, with the per-file path's exact output."""
    import json

    from transcription.hardware import usable_cpus

    clips = _clips(data)[:8]
    for name in ("sequential", "parallel"):
        for clip in clips:
            add_input(tmp_path / name, clip)
    seq = run_cli("transcribe", env=tiny_env(tmp_path / "sequential"))
    par = run_cli("transcribe", "--throughput", env=tiny_env(tmp_path / "parallel"))
    assert seq.returncode == 0 and par.returncode == 0, par.stderr[-3000:]
    mode = [json.loads(line) for line in par.stderr.splitlines() if '"throughput mode"' in line]
    assert mode and mode[0]["parallel_files"] == usable_cpus()
    for clip in clips:
        a = json.loads((tmp_path / "sequential" / "whisper_json" / f"{clip.stem}.json").read_text())
        b = json.loads((tmp_path / "parallel" / "whisper_json" / f"{clip.stem}.json").read_text())
        assert a["segments"] == b["segments"]
    report = json.loads((tmp_path / "parallel" / ".slower-whisper" / "last-run.json").read_text())
    assert sorted(report["done"]) == sorted(c.name for c in clips)

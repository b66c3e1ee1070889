"""discover -> claim -> decode -> transcribe -> enrich -> write, for a batch, a watcher and single uploads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, audio, schema, writers
from .asr import AsrOptions, AsrResult, Engine
from .config import Settings
from .layout import Input, Layout, Lease, atomic_write_json, atomic_write_text, remove_stale_temporaries

log = logging.getLogger(__name__)

# What turns a normalised WAV into text: `Engine.transcribe`, or the service's shared packer.
Transcriber = Callable[[audio.WavReader, AsrOptions], AsrResult]


class RunError(Exception):
    """The run cannot start (unwritable root, ...): nothing was done."""


# ---------------------------------------------------------------- one document


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def config_fingerprint(settings: Settings) -> str:
    fields = {"schema_version": schema.SCHEMA_VERSION, **settings.fingerprint_fields()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"slower_whisper": __version__}
    for dist in ("faster-whisper", "ctranslate2", "av"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def build_document(
    result: AsrResult,
    engine: Engine,
    settings: Settings,
    options: AsrOptions,
    *,
    file_label: str,
    source: Path,
    timings: dict[str, float],
    source_sha256: str | None = None,
) -> dict[str, Any]:
    st = source.stat()
    segments = [s.to_dict() for s in result.segments]
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "file": file_label,
        "language": result.language,
        "language_probability": None
        if result.language_probability is None
        else round(min(1.0, max(0.0, result.language_probability)), 4),
        "duration": round(result.duration, 3),
        "text": " ".join(s["text"] for s in segments if s["text"]),
        "segments": segments,
        "meta": {
            "model": engine.name,
            "device": engine.device,
            "compute_type": engine.compute_type,
            "batch_size": options.batch_size,
            "beam_size": options.beam_size,
            "vad": options.vad,
            "word_timestamps": options.word_timestamps,
            "versions": _versions(),
            "config_fingerprint": config_fingerprint(settings),
            "settings": settings.fingerprint_fields(),
            "source_sha256": source_sha256 or file_sha256(source),
            "source_size": st.st_size,
            "source_mtime_ns": st.st_mtime_ns,
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "warnings": list(result.warnings),
        },
    }


def enrich(doc: dict[str, Any], samples: audio.WavReader, settings: Settings) -> dict[str, Any]:
    """Stage 2 on one document; a crash here marks the features failed instead of losing the transcript."""
    from .enrich import enrich_document

    try:
        return enrich_document(doc, samples, settings)
    except Exception as exc:  # noqa: BLE001 - Stage 2 must never cost the Stage 1 result
        log.exception("enrichment failed", extra={"file": doc.get("file")})
        reason = f"enrichment crashed: {type(exc).__name__}: {exc}"
        for seg in doc["segments"]:
            state = seg.setdefault("audio_state", {})
            status = state.setdefault("status", {"prosody": "failed", "emotion": "failed", "errors": []})
            for feature in ("prosody", "emotion"):
                if status.get(feature) != "ok":
                    status[feature] = "failed"
            status["errors"] = [*status.get("errors", []), reason]
        doc["meta"].setdefault("warnings", []).append(reason)
        return doc


def needs_enrichment(doc: dict[str, Any], settings: Settings, retry_failed: bool) -> bool:
    """Whether Stage 2 has work: a segment never enriched, a feature now enabled, or (when asked) failed."""
    if not settings.enrich:
        return False
    wanted = [f for f, on in (("prosody", settings.prosody), ("emotion", settings.emotion)) if on]
    redo = {"skipped", "failed"} if retry_failed else {"skipped"}
    for seg in doc["segments"]:
        status = (seg.get("audio_state") or {}).get("status")
        if status is None or any(status.get(f) in redo or f not in status for f in wanted):
            return True
    return False


def transcribe_media(
    engine: Engine,
    settings: Settings,
    src: Path,
    wav_path: Path,
    *,
    file_label: str,
    language: str | None = None,
    initial_prompt: str | None = None,
    temperature: float | None = None,
    enrich_doc: bool | None = None,
    transcriber: Transcriber | None = None,
) -> dict[str, Any]:
    """Decode `src` into `wav_path`, transcribe, optionally enrich; return the validated document.

    `transcriber` replaces `engine.transcribe` (the service's shared packer, which batches requests together).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    audio.normalize(src, wav_path)
    timings["decode"] = time.perf_counter() - t0
    return _transcribe_wav(
        engine,
        settings,
        src,
        wav_path,
        file_label=file_label,
        timings=timings,
        options=AsrOptions.from_settings(
            settings, language=language, initial_prompt=initial_prompt, temperature=temperature
        ),
        enrich_doc=settings.enrich if enrich_doc is None else enrich_doc,
        transcriber=transcriber,
    )


def _transcribe_wav(
    engine: Engine,
    settings: Settings,
    src: Path,
    wav_path: Path,
    *,
    file_label: str,
    timings: dict[str, float],
    options: AsrOptions,
    enrich_doc: bool,
    source_sha256: str | None = None,
    transcriber: Transcriber | None = None,
) -> dict[str, Any]:
    reader = audio.WavReader(wav_path)
    t0 = time.perf_counter()
    result = (transcriber or engine.transcribe)(reader, options)
    timings["transcribe"] = time.perf_counter() - t0
    doc = build_document(
        result,
        engine,
        settings,
        options,
        file_label=file_label,
        source=src,
        timings=timings,
        source_sha256=source_sha256,
    )
    return complete(doc, reader, settings, enrich_doc)


def complete(
    doc: dict[str, Any], reader: audio.WavReader, settings: Settings, enrich_doc: bool
) -> dict[str, Any]:
    """Stage 2 when asked, then validation: what every Stage 1 path does to a fresh document."""
    if enrich_doc:
        doc = enrich(doc, reader, settings)
    schema.validate(doc)
    return doc


def write_outputs(layout: Layout, stem: str, doc: dict[str, Any]) -> None:
    """Text formats first, JSON last: the JSON is what marks the input as done."""
    for fmt in writers.TEXT_FORMATS:
        atomic_write_text(layout.text_path(stem, fmt), writers.render(doc, fmt))
    atomic_write_text(layout.json_path(stem), writers.render(doc, "json"))


# ---------------------------------------------------------------- batch state


def current_document(layout: Layout, inp: Input, settings: Settings) -> dict[str, Any] | None:
    """The finished document for `inp` if its outputs match this source content and these settings."""
    try:
        doc = json.loads(layout.json_path(inp.stem).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = doc.get("meta") if isinstance(doc, dict) else None
    if not isinstance(meta, dict) or meta.get("config_fingerprint") != config_fingerprint(settings):
        return None
    if not all(layout.text_path(inp.stem, fmt).is_file() for fmt in writers.TEXT_FORMATS):
        return None
    try:
        st = inp.path.stat()
    except OSError:
        return None
    if meta.get("source_size") == st.st_size and meta.get("source_mtime_ns") == st.st_mtime_ns:
        return doc
    # Touched but maybe unchanged: the content hash decides.
    return doc if meta.get("source_sha256") == file_sha256(inp.path) else None


@dataclass
class RunReport:
    run_id: str
    command: str
    started_at: str
    finished_at: str | None = None
    shard: str | None = None
    inputs: int = 0
    done: list[str] = field(default_factory=list)
    enriched: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    claimed_elsewhere: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def save(self, layout: Layout) -> Path:
        self.finished_at = _now()
        data = {k: v for k, v in vars(self).items()}
        path = layout.runs / f"{self.run_id}.json"
        atomic_write_json(path, data)
        atomic_write_json(layout.state / "last-run.json", data)
        return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _new_report(command: str, shard: tuple[int, int] | None) -> RunReport:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return RunReport(
        run_id=f"{stamp}-{command}-{uuid.uuid4().hex[:8]}",
        command=command,
        started_at=_now(),
        shard=None if shard is None else f"{shard[0]}/{shard[1]}",
    )


def prepare_root(settings: Settings) -> Layout:
    layout = Layout(settings.root)
    try:
        layout.ensure()
    except OSError as exc:
        raise RunError(f"cannot create the folders under {settings.root}: {exc.strerror or exc}") from None
    for folder in (layout.input_audio, layout.transcripts, layout.whisper_json, layout.state):
        probe = folder / f".write-probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunError(f"cannot write to {folder}: {exc.strerror or exc}") from None
        remove_stale_temporaries(folder, older_than_s=max(settings.lease_ttl * 2, 600.0))
    return layout


def in_shard(inp: Input, shard: tuple[int, int] | None) -> bool:
    """Stable split by a hash of the relative path, so the same file always lands in the same shard."""
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(inp.rel.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


# ---------------------------------------------------------------- processing


@dataclass(frozen=True)
class Decoded:
    duration: float
    seconds: float
    sha256: str


@dataclass
class _Work:
    inp: Input
    lease: Lease
    decoded: Future  # -> Decoded, or raises


class Processor:
    """Processes claimed inputs one after another, decoding the next while the current one transcribes."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        layout: Layout,
        report: RunReport,
        force: bool = False,
        decode_workers: int = 1,
    ) -> None:
        self.force = force
        self.engine = engine
        self.settings = settings
        self.layout = layout
        self.report = report
        self.options = AsrOptions.from_settings(settings)
        self._decoder = ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="decode")
        self.lock = threading.Lock()

    def close(self) -> None:
        self._decoder.shutdown(wait=True, cancel_futures=True)

    def _claim(self, inp: Input) -> _Work | None:
        lease = Lease(self.layout.leases, inp.stem, self.settings.lease_ttl)
        if not lease.acquire():
            self.report.claimed_elsewhere.append(inp.rel)
            log.info("claimed by another worker", extra={"file": inp.rel})
            return None
        # Another worker may have finished it between our check and our claim.
        if not self.force and current_document(self.layout, inp, self.settings) is not None:
            lease.release()
            self.report.skipped.append(inp.rel)
            return None
        return _Work(inp, lease, self._decoder.submit(self._decode, inp))

    def _decode(self, inp: Input) -> Decoded:
        t0 = time.perf_counter()
        duration = audio.normalize(inp.path, self.layout.wav_path(inp.stem))
        seconds = time.perf_counter() - t0
        # Hashed here, on the decode thread, so the source's second read overlaps the current transcription.
        return Decoded(duration, seconds, file_sha256(inp.path))

    def run(self, inputs: list[Input], stop: threading.Event, progress: Callable[[int, Input], None]) -> None:
        pending = iter(inputs)
        nxt = self.next_claim(pending, stop)
        n = 0
        while nxt is not None:
            work = nxt
            nxt = None if stop.is_set() else self.next_claim(pending, stop)  # its decode overlaps ours
            n += 1
            progress(n, work.inp)
            try:
                self.finish(work)
            finally:
                work.lease.release()
        if nxt is not None:  # stopped early: give the prefetched claim back
            nxt.decoded.cancel()
            nxt.lease.release()

    def next_claim(self, pending: Iterator[Input], stop: threading.Event) -> _Work | None:
        for inp in pending:
            if stop.is_set():
                return None
            work = self._claim(inp)
            if work is not None:
                return work
        return None

    def finish(self, work: _Work) -> None:
        inp = work.inp
        try:
            decoded: Decoded = work.decoded.result()
            duration = decoded.duration
            doc = _transcribe_wav(
                self.engine,
                self.settings,
                inp.path,
                self.layout.wav_path(inp.stem),
                file_label=inp.rel,
                timings={"decode": decoded.seconds},
                options=self.options,
                enrich_doc=self.settings.enrich,
                source_sha256=decoded.sha256,
            )
            write_outputs(self.layout, inp.stem, doc)
        except Exception as exc:  # noqa: BLE001 - one bad input never stops the batch
            self._failed(inp, exc)
            return
        self.succeeded(inp, duration, doc)

    def succeeded(self, inp: Input, duration: float, doc: dict[str, Any]) -> None:
        """Record a written input: clear its old failure, count it, log it."""
        self.layout.failure_path(inp.stem).unlink(missing_ok=True)
        with self.lock:  # several workers may finish at once (throughput mode)
            self.report.done.append(inp.rel)
            self.report.audio_seconds += duration
        log.info(
            "transcribed",
            extra={
                "file": inp.rel,
                "duration_s": round(duration, 2),
                "segments": len(doc["segments"]),
                "language": doc["language"],
                "timings": doc["meta"]["timings"],
            },
        )

    def _failed(self, inp: Input, exc: Exception) -> None:
        kind = "decode" if isinstance(exc, audio.DecodeError) else type(exc).__name__
        message = str(exc) or type(exc).__name__
        entry = {"file": inp.rel, "error": message, "type": kind, "at": _now()}
        with self.lock:
            self.report.failed.append(entry)
        if isinstance(exc, audio.DecodeError):
            log.error("failed", extra={"file": inp.rel, "error": message})
        else:
            log.error("failed", extra={"file": inp.rel, "error": message}, exc_info=exc)
        with contextlib.suppress(OSError):
            atomic_write_json(self.layout.failure_path(inp.stem), entry)


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise (the JSON log lines carry the progress)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int, inp: Input) -> None:
        if self.tty and self.total:
            width = 30
            filled = int(width * (n - 1) / self.total)
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {n}/{self.total} {inp.rel[:50]:50s}"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.total:
            sys.stderr.write("\n")


def plan(
    layout: Layout, settings: Settings, force: bool, shard: tuple[int, int] | None, report: RunReport
) -> tuple[list[Input], list[tuple[Input, dict]]]:
    """Split the shard's inputs into those to transcribe and finished ones that only need Stage 2."""
    todo: list[Input] = []
    enrich_only: list[tuple[Input, dict]] = []
    for inp in (i for i in layout.discover() if in_shard(i, shard)):
        report.inputs += 1
        doc = None if force else current_document(layout, inp, settings)
        if doc is None:
            todo.append(inp)
        elif needs_enrichment(doc, settings, retry_failed=False):
            enrich_only.append((inp, doc))
        else:
            report.skipped.append(inp.rel)
    return todo, enrich_only


@dataclass(frozen=True)
class Strategy:
    """How a batch run uses the hardware: engine workers, decode threads, and the loop over claimed inputs.

    The default is one file after another with the next file's decode overlapped; `throughput.strategy`
    gives the throughput mode's.
    """

    engine_workers: int = 1
    decode_workers: int = 1
    run: Callable[[Processor, list[Input], threading.Event, Callable[[int, Input], None]], None] | None = None


def run_batch(
    settings: Settings,
    *,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    stop: threading.Event | None = None,
    engine: Engine | None = None,
    strategy: Strategy | None = None,
) -> RunReport:
    """`slower-whisper transcribe`: every input of the root (or of one shard) not yet current."""
    strategy = strategy or Strategy()
    stop = stop or threading.Event()
    layout = prepare_root(settings)
    report = _new_report("transcribe", shard)
    todo, enrich_only = plan(layout, settings, force, shard, report)
    log.info(
        "planned",
        extra={
            "inputs": report.inputs,
            "to_transcribe": len(todo),
            "to_enrich": len(enrich_only),
            "up_to_date": len(report.skipped),
            "shard": report.shard,
        },
    )
    if todo:
        engine = engine or Engine.load(settings, workers=strategy.engine_workers)
        processor = Processor(
            engine, settings, layout, report, force=force, decode_workers=strategy.decode_workers
        )
        progress = _Progress(len(todo))
        try:
            (strategy.run or Processor.run)(processor, todo, stop, progress)
        finally:
            progress.close()
            processor.close()
    for inp, doc in enrich_only:
        if stop.is_set():
            break
        _enrich_one(layout, settings, inp, doc, report)
    report.save(layout)
    log.info(
        "run finished",
        extra={
            "done": len(report.done),
            "enriched": len(report.enriched),
            "skipped": len(report.skipped),
            "failed": len(report.failed),
            "claimed_elsewhere": len(report.claimed_elsewhere),
        },
    )
    return report


def _enrich_one(layout: Layout, settings: Settings, inp: Input, doc: dict, report: RunReport) -> None:
    lease = Lease(layout.leases, inp.stem, settings.lease_ttl)
    if not lease.acquire():
        report.claimed_elsewhere.append(inp.rel)
        return
    try:
        wav = layout.wav_path(inp.stem)
        if not wav.is_file():  # the normalised WAV was cleaned away: decode once more
            audio.normalize(inp.path, wav)
        t0 = time.perf_counter()
        doc = enrich(doc, audio.WavReader(wav), settings)
        doc["meta"]["timings"]["enrich_total"] = round(time.perf_counter() - t0, 4)
        schema.validate(doc)
        write_outputs(layout, inp.stem, doc)
        report.enriched.append(inp.rel)
    except Exception as exc:  # noqa: BLE001 - isolate per file
        report.failed.append({"file": inp.rel, "error": str(exc), "type": type(exc).__name__, "at": _now()})
        log.error("enrich failed", extra={"file": inp.rel, "error": str(exc)})
    finally:
        lease.release()


def run_enrich(settings: Settings, *, stop: threading.Event | None = None) -> RunReport:
    """`slower-whisper enrich`: Stage 2 alone on finished transcripts, redoing missing or failed features."""
    stop = stop or threading.Event()
    settings = _with_enrich(settings)
    layout = prepare_root(settings)
    report = _new_report("enrich", None)
    by_stem = {i.stem: i for i in layout.discover()}
    for path in sorted(layout.whisper_json.rglob("*.json")):
        if stop.is_set():
            break
        stem = path.relative_to(layout.whisper_json).as_posix()[: -len(".json")]
        report.inputs += 1
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            schema.validate(doc)
        except Exception as exc:  # noqa: BLE001
            report.failed.append(
                {"file": stem, "error": f"unreadable transcript: {exc}", "type": "json", "at": _now()}
            )
            continue
        inp = by_stem.get(stem) or Input(layout.raw_audio / doc["file"], doc["file"], stem)
        if not needs_enrichment(doc, settings, retry_failed=True):
            report.skipped.append(inp.rel)
            continue
        _enrich_one(layout, settings, inp, doc, report)
    report.save(layout)
    return report


def _with_enrich(settings: Settings) -> Settings:
    return settings if settings.enrich else replace(settings, enrich=True)


# ---------------------------------------------------------------- watch


def watch(
    settings: Settings,
    *,
    stop: threading.Event,
    interval: float = 5.0,
    settle: float | None = None,
    strategy: Strategy | None = None,
) -> int:
    """Transcribe new inputs as they arrive, once each file has stopped growing; until `stop` is set."""
    strategy = strategy or Strategy()
    layout = prepare_root(settings)
    engine = Engine.load(settings, workers=strategy.engine_workers)
    settle = interval if settle is None else settle
    seen: dict[str, tuple[int, int, float]] = {}  # rel -> (size, mtime_ns, unchanged since)
    failed_at: dict[str, tuple[int, int]] = {}  # a failed file is retried only once it changes
    log.info("watching", extra={"root": str(settings.root), "interval_s": interval})
    while not stop.is_set():
        report = _new_report("watch", None)
        ready: list[Input] = []
        now = time.monotonic()
        for inp in layout.discover():
            try:
                st = inp.path.stat()
            except OSError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            prev = seen.get(inp.rel)
            if prev is None or prev[:2] != sig:
                seen[inp.rel] = (*sig, now)
                continue
            if now - prev[2] < settle or failed_at.get(inp.rel) == sig:
                continue
            if current_document(layout, inp, settings) is None:
                ready.append(inp)
        if ready:
            report.inputs = len(ready)
            processor = Processor(engine, settings, layout, report, decode_workers=strategy.decode_workers)
            try:
                (strategy.run or Processor.run)(processor, ready, stop, lambda n, i: None)
            finally:
                processor.close()
            for entry in report.failed:
                inp_sig = seen.get(entry["file"])
                if inp_sig:
                    failed_at[entry["file"]] = inp_sig[:2]
            report.save(layout)
        stop.wait(interval)
    log.info("watch stopped")
    return 0


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT finish the current file, then stop (Kubernetes sends SIGTERM before killing a pod)."""
    import signal

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("stop requested; finishing the current file", extra={"signal": signum})
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)

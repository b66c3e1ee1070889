"""The batch run: discover -> claim -> decode -> transcribe -> finish -> write, for `transcribe`, `enrich`
and the watcher. One file's document path is in per_file.py and document.py."""

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
from typing import Any

from . import audio, document, logsetup, per_file, schema, speakers
from .asr import AsrOptions, Engine
from .config import Settings
from .errors import UsageError
from .layout import Input, Layout, Lease, atomic_write_json, remove_stale_temporaries
from .per_file import Decoded

log = logging.getLogger(__name__)


class RunError(UsageError):
    """The run cannot start (unwritable root, ...): nothing was done."""


# ---------------------------------------------------------------- batch state


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
    speakers_added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    claimed_elsewhere: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    # Speech the loss detector could not get text for, even decoded again: {file, start, end} (seconds).
    speech_without_text: list[dict[str, Any]] = field(default_factory=list)
    audio_seconds: float = 0.0
    report_error: str | None = None  # the report itself could not be written (a full disk)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.report_error else 0

    def save(self, layout: Layout) -> None:
        """Write the run's record and `last-run.json`; a failure is recorded on the report (exit 1) and
        leaves no `last-run.json` that describes an earlier run as if it were this one."""
        self.finished_at = _now()
        data = {k: v for k, v in vars(self).items() if k != "report_error"}
        last = layout.state / "last-run.json"
        try:
            atomic_write_json(layout.runs / f"{self.run_id}.json", data)
            atomic_write_json(last, data)
        except OSError as exc:
            self.report_error = f"cannot write the run report under {layout.state}: {exc.strerror or exc}"
            log.error("run report not written", extra={"error": self.report_error})
            with contextlib.suppress(OSError):
                last.unlink(missing_ok=True)


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
    """The root's folders, created under an existing root and checked writable."""
    if not settings.root.is_dir():
        # A mistyped path must not look like a successful run over zero inputs.
        raise RunError(
            f"the root folder {settings.root} does not exist or is not a folder "
            "(--root / SLOWER_WHISPER_ROOT); create it first"
        )
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
        if not self.force and document.current(self.layout, inp, self.settings) is not None:
            lease.release()
            self.report.skipped.append(inp.rel)
            return None
        return _Work(inp, lease, self._decoder.submit(self._decode, inp))

    def _decode(self, inp: Input) -> Decoded:
        # On the decode thread: the source's decode and hash overlap the current transcription.
        return per_file.decode(inp.path, self.layout.wav_path(inp.stem))

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
                self.transcribe_and_write(work)
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

    def transcribe_and_write(self, work: _Work) -> None:
        """One claimed input: wait for its decode, transcribe and finish it, write its outputs, record it."""
        inp = work.inp
        try:
            decoded: Decoded = work.decoded.result()
            duration = decoded.duration
            doc = per_file.transcribe_and_finish(
                self.engine,
                self.settings,
                decoded,
                self.layout.wav_path(inp.stem),
                file_label=inp.rel,
                options=self.options,
                enrich=self.settings.enrich,
            )
            document.write(self.layout, inp.stem, doc)
        except Exception as exc:  # noqa: BLE001 - one bad input never stops the batch
            self.failed(inp, exc)
            return
        self.succeeded(inp, duration, doc)

    def succeeded(self, inp: Input, duration: float, doc: dict[str, Any]) -> None:
        """Record a written input: a failed diarization still fails it (the transcript is kept, and the
        next run adds the speakers without transcribing again)."""
        error = speakers.failure(doc)
        if error is not None:
            self.failed(inp, error)
        else:
            self._succeeded(inp, duration, doc)

    def _succeeded(self, inp: Input, duration: float, doc: dict[str, Any]) -> None:
        """Clear its old failure, count it, log it."""
        self.layout.failure_path(inp.stem).unlink(missing_ok=True)
        lost = [{"file": inp.rel, **span} for span in doc["meta"].get("speech_without_text", [])]
        with self.lock:  # several workers may finish at once (throughput mode)
            self.report.done.append(inp.rel)
            self.report.audio_seconds += duration
            self.report.speech_without_text.extend(lost)
        log.info(
            "transcribed",
            extra={
                "file": inp.rel,
                "duration_s": round(duration, 2),
                "segments": len(doc["segments"]),
                "language": doc["language"],
                "languages": [item["language"] for item in doc.get("languages", [])],
                "timings": doc["meta"]["timings"],
            },
        )
        for span in lost:
            log.warning(
                "speech without text",
                extra={"file": inp.rel, "start_s": span["start"], "end_s": span["end"]},
            )

    def failed(self, inp: Input, exc: Exception) -> None:
        """Record a failed input: in the run report, the log and its failure file."""
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


class ProgressBar:
    """A progress bar on a terminal, on its own line under the log lines (`logsetup.show_status`); silent
    otherwise (the JSON log lines carry the progress). Files are counted done when the next one starts, and
    all of them (every started one: a stop finishes those) when the run closes the bar."""

    WIDTH = 30

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = 0
        self.tty = sys.stderr.isatty()

    def __call__(self, n: int, inp: Input) -> None:
        self.started = max(self.started, n)
        if self.tty and self.total:
            logsetup.show_status(f"{self._bar(n - 1)} {n}/{self.total} {inp.rel[:50]}")

    def close(self) -> None:
        if self.tty and self.total:
            logsetup.show_status(f"{self._bar(self.started)} {self.started}/{self.total}", final=True)

    def _bar(self, done: int) -> str:
        filled = int(self.WIDTH * done / self.total)
        return f"[{'#' * filled}{'.' * (self.WIDTH - filled)}]"


def plan(
    layout: Layout, settings: Settings, force: bool, shard: tuple[int, int] | None, report: RunReport
) -> tuple[list[Input], list[tuple[Input, dict]]]:
    """Split the shard's inputs into those to transcribe and finished transcripts that only need speakers
    or Stage 2 (`refinish`)."""
    todo: list[Input] = []
    refinish: list[tuple[Input, dict]] = []
    for inp in (i for i in layout.discover() if in_shard(i, shard)):
        report.inputs += 1
        doc = None if force else document.current(layout, inp, settings)
        if doc is None:
            todo.append(inp)
        elif needs_refinish(doc, settings):
            refinish.append((inp, doc))
        else:
            report.skipped.append(inp.rel)
    return todo, refinish


def needs_refinish(doc: dict[str, Any], settings: Settings) -> bool:
    """A current transcript still lacking speakers (as these settings find them) or Stage 2 features."""
    if settings.diarize and not speakers.current(doc, settings):
        return True
    return settings.enrich and _needs_enrichment(doc, settings, retry_failed=False)


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
    todo, refinish = plan(layout, settings, force, shard, report)
    log.info(
        "planned",
        extra={
            "inputs": report.inputs,
            "to_transcribe": len(todo),
            "to_finish": len(refinish),
            "up_to_date": len(report.skipped),
            "shard": report.shard,
        },
    )
    if settings.diarize and (todo or refinish):
        speakers.diarizer(settings)  # a missing diarization model is exit 2 before any work
    if todo:
        engine = engine or Engine.load(settings, workers=strategy.engine_workers)
        processor = Processor(
            engine, settings, layout, report, force=force, decode_workers=strategy.decode_workers
        )
        progress = ProgressBar(len(todo))
        try:
            (strategy.run or Processor.run)(processor, todo, stop, progress)
        finally:
            progress.close()
            processor.close()
    for inp, doc in refinish:
        if stop.is_set():
            break
        _refinish_one(layout, settings, inp, doc, report)
    report.save(layout)
    log.info(
        "run finished",
        extra={
            "done": len(report.done),
            "enriched": len(report.enriched),
            "speakers_added": len(report.speakers_added),
            "skipped": len(report.skipped),
            "failed": len(report.failed),
            "claimed_elsewhere": len(report.claimed_elsewhere),
            "speech_without_text": len(report.speech_without_text),
        },
    )
    return report


def _refinish_one(layout: Layout, settings: Settings, inp: Input, doc: dict, report: RunReport) -> None:
    """Speakers and/or Stage 2 on a current transcript, without transcribing it again."""
    lease = Lease(layout.leases, inp.stem, settings.lease_ttl)
    if not lease.acquire():
        report.claimed_elsewhere.append(inp.rel)
        return
    try:
        wav = layout.wav_path(inp.stem)
        if not wav.is_file():  # the normalised WAV was cleaned away: decode once more
            audio.normalize(inp.path, wav)
        diarized = settings.diarize and not speakers.current(doc, settings)
        if diarized:
            source = inp.path if inp.path.is_file() else None
            speakers.add(doc, speakers.start(settings, wav, source), settings)
        # Segments split at speaker changes have no Stage 2 state yet: an enriched transcript stays whole.
        enrich = settings.enrich or (diarized and "enrichment" in doc["meta"])
        doc = document.finish(
            doc, audio.WavReader(wav), _with_enrich(settings) if enrich else settings, enrich=enrich
        )
        document.write(layout, inp.stem, doc)
        error = speakers.failure(doc) if diarized else None
        if error is not None:
            raise error
        if diarized:
            report.speakers_added.append(inp.rel)
        if enrich:
            report.enriched.append(inp.rel)
    except Exception as exc:  # noqa: BLE001 - isolate per file
        report.failed.append({"file": inp.rel, "error": str(exc), "type": type(exc).__name__, "at": _now()})
        log.error("finishing failed", extra={"file": inp.rel, "error": str(exc)})
    finally:
        lease.release()


def run_enrich(settings: Settings, *, stop: threading.Event | None = None) -> RunReport:
    """`slower-whisper enrich`: Stage 2 alone on finished transcripts, redoing missing or failed features."""
    stop = stop or threading.Event()
    # Stage 2 alone: speakers are `transcribe --diarize`'s, even where ENABLE_DIARIZATION is set for all pods.
    settings = replace(_with_enrich(settings), diarize=False)
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
        if not _needs_enrichment(doc, settings, retry_failed=True):
            report.skipped.append(inp.rel)
            continue
        _refinish_one(layout, settings, inp, doc, report)
    report.save(layout)
    return report


def _with_enrich(settings: Settings) -> Settings:
    return settings if settings.enrich else replace(settings, enrich=True)


def _needs_enrichment(doc: dict[str, Any], settings: Settings, retry_failed: bool) -> bool:
    # Imported here: Stage 2's dependencies are an extra, needed only when enrichment is on.
    from .enrich.status import needs_enrichment

    return needs_enrichment(doc, settings, retry_failed)


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
    if settings.diarize:
        speakers.diarizer(settings)
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
            doc = document.current(layout, inp, settings)
            if doc is None:
                ready.append(inp)
            elif needs_refinish(doc, settings):
                failures = len(report.failed)
                _refinish_one(layout, settings, inp, doc, report)
                if len(report.failed) > failures:
                    failed_at[inp.rel] = sig  # retried once the file changes, as a failed transcription
        if report.enriched or report.speakers_added or report.failed:
            report.save(layout)
            report = _new_report("watch", None)
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

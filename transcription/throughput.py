"""Throughput mode: keep the hardware busy across many files.

On CPU with no batch size set, files run in parallel, one per core, each through the per-file path
(`run_parallel`): CTranslate2's threads scale poorly within one file on few cores, so this is where the
throughput is there, and the text equals the per-file path. Otherwise (CUDA, or a batch size given), speech
from many files is packed into shared inference batches (`packing.Packer`), driven as follows:

- claims (leases) and decodes run ahead on the processor's decode pool, and the CPU half of inference
  (VAD, chunking, features) on a small preparation pool, a bounded number of files ahead;
- the calling thread only runs the model, on batches mixing whichever files' chunks are queued;
- a finished file is handed to a writer thread (document, optional enrichment, validation, outputs), so
  writing overlaps the next batches.

The text equals the per-file batched path (`--batch-size N`); see packing.py for why and for the memory
bound.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import audio, document, hardware, pipeline, sizing, speakers
from .config import Settings
from .document import SourceIdentity
from .layout import Input
from .packing import PackedFile, Packer, Prepared
from .per_file import Decoded

log = logging.getLogger(__name__)


@dataclass
class _Claim:
    """The CLI's side of a packed file: what it was claimed as and how its decode went."""

    inp: Input
    lease: Any
    decode_s: float = 0.0
    source: SourceIdentity | None = None
    diarizing: Future | None = None  # speakers found on CPU while the GPU transcribes


class _Run:
    """One packed batch run: a Packer fed from claimed inputs, finished files written on a writer thread."""

    def __init__(self, processor: pipeline.Processor, batch_size: int, workers: int) -> None:
        self.p = processor
        self.packer = Packer(processor.engine, batch_size, self._finished, self._failed)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
        self.written: list[Future] = []

    def prepare_first(self, work: Any) -> Prepared:
        """Wait for the decode, then prepare the file's first window (pool thread)."""
        decoded: Decoded = work.decoded.result()
        claim = _Claim(work.inp, work.lease, decoded.seconds, decoded.source)
        wav = self.p.layout.wav_path(work.inp.stem)
        if self.p.settings.diarize:
            claim.diarizing = speakers.start(self.p.settings, wav, decoded.path)
        f = self.packer.open(wav, self.p.options, claim)
        return self.packer.prepare(f, 0)

    def fail_claim(self, work: Any, exc: BaseException) -> None:
        """A claim whose decode or first preparation failed: it never became a packed file."""
        f = PackedFile(Path(), self.p.options, _Claim(work.inp, work.lease))
        self.packer.fail(f, exc)

    # ---------------------------------------------------------------- results (writer thread)

    def _finished(self, f: PackedFile) -> None:
        transcribe_s = time.perf_counter() - (f.first_batch_at or time.perf_counter())
        self.written.append(self.writer.submit(self._write, f, transcribe_s))

    def _failed(self, f: PackedFile, exc: BaseException) -> None:
        self.written.append(self.writer.submit(self._write_failure, f, exc))

    def _write_failure(self, f: PackedFile, exc: BaseException) -> None:
        claim: _Claim = f.owner
        if claim.diarizing is not None:
            claim.diarizing.cancel()
        try:
            self.p.failed(claim.inp, exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        finally:
            claim.lease.release()

    def _write(self, f: PackedFile, transcribe_s: float) -> None:
        claim: _Claim = f.owner
        inp = claim.inp
        try:
            assert claim.source is not None  # set when its decode succeeded
            doc = document.build(
                self.packer.conclude(f),
                self.p.engine,
                self.p.settings,
                f.options,
                file_label=inp.rel,
                source=claim.source,
                timings={"decode": claim.decode_s, "prepare": f.prepare_s, "transcribe": transcribe_s},
            )
            if claim.diarizing is not None:
                speakers.add(doc, claim.diarizing, self.p.settings)
            doc = document.finish(doc, audio.WavReader(f.wav), self.p.settings, enrich=self.p.settings.enrich)
            document.write(self.p.layout, inp.stem, doc)
        except Exception as exc:  # noqa: BLE001 - one bad input never stops the batch
            self.p.failed(inp, exc)
            claim.lease.release()
            return
        claim.lease.release()
        self.p.succeeded(inp, f.duration, doc)

    def close(self) -> None:
        self.packer.budget.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for fut in self.written:
            fut.result()  # _write and _write_failure catch per-file errors; anything else is a bug
        self.writer.shutdown(wait=True)


def strategy(settings: Settings) -> pipeline.Strategy:
    """The batch run's strategy in throughput mode."""
    return pipeline.Strategy(
        engine_workers=sizing.engine_workers(settings),
        decode_workers=hardware.prepare_workers(settings.resolved_device()),
        run=run,
    )


def run_parallel(
    processor: pipeline.Processor,
    inputs: list[Input],
    stop: threading.Event,
    progress: Callable[[int, Input], None],
) -> None:
    """Several files at once, each through the per-file path, one per engine worker; text as per-file."""
    pending = iter(inputs)
    claim_lock = threading.Lock()
    started = itertools.count(1)

    def work() -> None:
        while not stop.is_set():
            with claim_lock:  # claims stay in input order, one at a time
                claimed = processor.next_claim(pending, stop)
                if claimed is None:
                    return
                progress(next(started), claimed.inp)
            try:
                processor.transcribe_and_write(claimed)
            finally:
                claimed.lease.release()

    threads = [
        threading.Thread(target=work, name=f"transcribe-{i}", daemon=True)
        for i in range(processor.engine.workers)
    ]
    log.info("throughput mode", extra={"parallel_files": len(threads), "files": len(inputs)})
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(
    processor: pipeline.Processor,
    inputs: list[Input],
    stop: threading.Event,
    progress: Callable[[int, Input], None],
) -> None:
    """Transcribe `inputs` for throughput; per-file semantics as `Processor.run`: files in parallel on CPU
    with no batch size set (`run_parallel`), else chunks of several files packed into batches
    (`run_packed`)."""
    if sizing.packs(processor.settings):
        run_packed(processor, inputs, stop, progress)
    else:
        run_parallel(processor, inputs, stop, progress)


def run_packed(
    processor: pipeline.Processor,
    inputs: list[Input],
    stop: threading.Event,
    progress: Callable[[int, Input], None],
) -> None:
    """Chunks of several files packed into each batch. On `stop`, files already started are finished;
    claims not started are given back."""
    batch_size = sizing.choose_batch_size(processor.engine, processor.options.batch_size)
    # Decoding runs on the processor's decode pool (sized by hardware.prepare_workers() in strategy()).
    workers = hardware.prepare_workers(processor.engine.device)
    run = _Run(processor, batch_size, workers)
    log.info(
        "throughput mode",
        extra={"batch_size": batch_size, "prepare_workers": workers, "files": len(inputs)},
    )
    try:
        _loop(run, iter(inputs), stop, progress)
    finally:
        run.close()


def _loop(
    run: _Run,
    pending_inputs: Iterator[Input],
    stop: threading.Event,
    progress: Callable[[int, Input], None],
) -> None:
    processor, packer = run.p, run.packer
    # prepare future -> its claim (a file's first window) or its PackedFile (a later window of a long file)
    in_flight: dict[Future, Any] = {}
    files_ahead = max(4, 2 * packer.batch_size)  # leases held ahead of the model, bounded
    started = 0
    exhausted = False
    try:
        while True:
            if stop.is_set():
                _give_back_unstarted(run, in_flight)
            # 1. Claim and prepare ahead.
            while not exhausted and not stop.is_set() and _firsts(in_flight) < files_ahead:
                work = processor.next_claim(pending_inputs, stop)
                if work is None:
                    exhausted = True
                    break
                in_flight[run.pool.submit(run.prepare_first, work)] = work
            # 2. Every prepared window goes into the batch queues, in order of completion.
            for fut in [f for f in in_flight if f.done()]:
                owner = in_flight.pop(fut)
                if not isinstance(owner, PackedFile):
                    started += 1
                    progress(started, owner.inp)
                nxt = _take(run, fut, owner)
                if nxt is not None:  # the next window of a long file is prepared while this one runs
                    in_flight[run.pool.submit(packer.prepare, nxt[0], nxt[1])] = nxt[0]
            # 3. The model: a full batch if there is one; else, rather than wait for preparation,
            # whatever is queued; wait only when nothing is.
            if packer.run_next():
                continue
            if in_flight:
                wait(list(in_flight), return_when=FIRST_COMPLETED)
            elif exhausted or stop.is_set():
                break
    finally:
        for fut, owner in in_flight.items():  # an error escaped: nothing may keep a lease
            fut.cancel()
            if not isinstance(owner, PackedFile):
                owner.decoded.cancel()
                if fut.cancelled():
                    owner.lease.release()
                else:
                    fut.add_done_callback(lambda _f, o=owner: o.lease.release())


def _firsts(in_flight: dict[Future, Any]) -> int:
    return sum(1 for owner in in_flight.values() if not isinstance(owner, PackedFile))


def _give_back_unstarted(run: _Run, in_flight: dict[Future, Any]) -> None:
    """After a stop: files whose preparation has not reached the model are released, not processed."""
    for fut in [f for f, owner in in_flight.items() if not isinstance(owner, PackedFile)]:
        owner = in_flight.pop(fut)
        fut.cancel()
        owner.decoded.cancel()
        if not fut.cancelled():
            with contextlib.suppress(Exception):  # a failed preparation holds no budget
                run.packer.budget.release(fut.result().nbytes)
        owner.lease.release()


def _take(run: _Run, fut: Future, owner: Any) -> tuple[PackedFile, int] | None:
    """Queue one finished preparation; returns the long file's next window to prepare, if any."""
    try:
        prep: Prepared = fut.result()
    except Exception as exc:  # noqa: BLE001 - decode or preparation failed: that file only
        if isinstance(owner, PackedFile):
            run.packer.fail(owner, exc)
        else:
            run.fail_claim(owner, exc)
        return None
    f = prep.file
    run.packer.accept(prep)
    nxt = prep.index + 1
    return (f, nxt) if not f.failed and nxt < len(f.windows) else None

"""Packed inference: speech chunks of many files share the model's batches.

faster-whisper's `BatchedInferencePipeline` batches the 30 s speech chunks of one file, so a file of 8 s
fills one slot of a batch of 16 and the accelerator idles. Here the two halves of its `transcribe` are
pulled apart:

- `Packer.prepare` is the CPU half of one window of a file: `window_plan.FileRun.plan` (the window's
  samples, speech units and language spans, as for the per-file engine), then per span its speech merged into
  <= 30 s chunks and their log-Mel features; it runs on any thread;
- `Packer.accept` queues the prepared chunks, one queue per (language, decoding options), since the prompt
  names the language and a batch shares its options;
- `Packer.take` / `Packer.run` form a batch from whichever files' chunks are queued and run the model on it;
  each chunk's result goes back to its file, and a file whose last window is done is handed to
  `on_finished`; `Packer.conclude` then gives its result (`FileRun.conclude`: the loss detector, the main
  language, warnings: the same end as the per-file engine's).

Two drivers use it: the CLI's throughput mode (`throughput.run_packed`, one loop thread feeding the model
while a pool prepares upcoming files) and the service (`SharedPacker`, where each request's worker thread
prepares its own file and one model thread packs all requests' chunks together).

Per chunk, the steps are those of `BatchedInferencePipeline.transcribe` (same VAD options, chunking,
features, prompt, word alignment and timestamp restoration), and a file longer than `window_plan.WINDOW_S` is
cut into the same windows as `Engine.transcribe`, so the text equals the per-file batched path (`--batch-size
N`) apart from floating-point effects of a different batch composition.

Memory is bounded: features wait in memory only for prepared chunks not yet inferred (at most the feature
budget plus one window per preparing thread); the audio itself stays on disk.

Priority: a file opened with `priority=True` (a live turn on /v1/realtime, a streamed request) queues its
chunks apart, and the next batch is formed from them first, topped up with ordinary chunks of the same key;
so a long batch job queued ahead never delays a live caller by more than the batch that is running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import asr, audio
from . import fw_internals as fw
from .asr import AsrOptions, AsrResult
from .window_plan import FileRun, Source, fixed_chunks

log = logging.getLogger(__name__)

FEATURE_BUDGET_FLOOR = 256 << 20  # bytes of prepared features allowed to wait for a batch
MAX_WAIT_S = 5.0  # a queued chunk older than this goes into the next batch, full or not
_SETUPS_KEPT = 32  # decoding set-ups cached (a service sees a new key for every new prompt)

Key = tuple[str, AsrOptions]  # (language, decoding options): chunks that may share a batch


# ---------------------------------------------------------------- state of one file in flight


@dataclass
class _Window:
    """One language span of a window of a file (the whole window when it keeps one language): its speech
    clips, chunks, and results as they come back."""

    index: int
    offset_s: float
    clips: list[dict[str, int]]  # VAD speech ranges in span samples, for timestamp restoration
    n_chunks: int
    language: str = "en"
    restore: bool = True  # False when chunks are fixed 30 s pieces (no VAD): their times are already real
    done: int = 0
    last_speech: float = 0.0  # faster-whisper's word-timing state, carried chunk to chunk in a window
    results: list[Any] = field(default_factory=list)  # faster_whisper Segment, in window-chunk time


@dataclass
class PackedFile:
    """One file going through the packer. `owner` is the driver's own record (claim, lease, request)."""

    wav: Path | None
    options: AsrOptions
    owner: Any = None
    run: FileRun | None = None  # its windows, plans and segments (None: it failed before it was opened)
    priority: bool = False
    windows_accepted: int = 0
    parts_total: int = 0  # language spans accepted, over all windows
    parts_done: int = 0
    prepare_s: float = 0.0
    first_batch_at: float | None = None
    failed: bool = False
    finished: bool = False
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def windows(self) -> list[tuple[int, int]]:
        return self.run.windows if self.run is not None else []

    @property
    def duration(self) -> float:
        return self.run.duration if self.run is not None else 0.0


@dataclass
class Part:
    """One language span of a prepared window: its chunks' features, ready for the model."""

    window: _Window
    features: list[np.ndarray]  # per chunk, (n_mels, 3000)
    metadata: list[dict[str, Any]]  # per chunk: offset/duration in the span's speech-only timeline


@dataclass
class Prepared:
    """The CPU half of one window: ready for the model."""

    file: PackedFile
    index: int
    parts: list[Part]
    nbytes: int = 0  # taken from the budget; given back as the chunks reach the model

    @property
    def features(self) -> list[np.ndarray]:
        return [feats for part in self.parts for feats in part.features]


@dataclass
class _Chunk:
    file: PackedFile
    window: _Window
    features: np.ndarray
    metadata: dict[str, Any]
    queued_at: float = field(default_factory=time.monotonic)


class Budget:
    """Bytes of features allowed to wait for the model; preparation blocks when they are spent.

    One request always passes when nothing is held, so a window larger than the whole budget still runs.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()
        self._closed = False

    def acquire(self, n: int) -> None:
        with self._cond:
            while not self._closed and self.used > 0 and self.used + n > self.limit:
                self._cond.wait()
            if self._closed:
                raise RuntimeError("packed inference stopped")
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used = max(0, self.used - n)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# ---------------------------------------------------------------- the packer


class Packer:
    """Packs queued chunks of any files into batches of up to `batch_size` and runs the model on them.

    `prepare` may run on any thread. Queue and file state change under `lock`; the model runs outside it,
    on one thread at a time (the driver's). `on_finished(file)` / `on_failed(file, error)` are called once
    per file, with `lock` held: they must only hand the file on. `on_batch(chunks, files)` reports each
    batch's size and how many files it mixed.
    """

    def __init__(
        self,
        engine: asr.Engine,
        batch_size: int,
        on_finished: Callable[[PackedFile], None],
        on_failed: Callable[[PackedFile, BaseException], None],
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.model = engine.model  # faster_whisper.WhisperModel
        self.batch_size = batch_size
        self.chunk_length = fw.chunk_length(self.model)
        self.chunk_bytes = fw.n_mels(self.model) * 3000 * 4  # one padded 30 s feature window
        self.budget = Budget(max(FEATURE_BUDGET_FLOOR, 3 * batch_size * self.chunk_bytes))
        self.lock = threading.RLock()
        self.pending: dict[Key, deque[_Chunk]] = {}
        self.urgent: dict[Key, deque[_Chunk]] = {}  # chunks of priority files, batched first
        self._setups: OrderedDict[Key, tuple[Any, Any]] = OrderedDict()  # recent keys only: prompts vary
        self._on_finished = on_finished
        self._on_failed = on_failed
        self._on_batch = on_batch
        self.max_wait_s = MAX_WAIT_S

    # ---------------------------------------------------------------- CPU side (any thread)

    def open(self, wav: Path, options: AsrOptions, owner: Any = None) -> PackedFile:
        """A file to pack, and its windows."""
        return self._open(wav, audio.WavReader(wav), options, owner)

    def open_samples(self, samples: np.ndarray, options: AsrOptions, priority: bool = False) -> PackedFile:
        """A file held in memory (16 kHz float32), e.g. a live turn; `priority` puts it ahead of files."""
        f = self._open(None, samples, options)
        f.priority = priority
        return f

    def _open(
        self, wav: Path | None, source: audio.WavReader | np.ndarray, options: AsrOptions, owner: Any = None
    ) -> PackedFile:
        options = replace(options, batch_size=self.batch_size)
        run = FileRun(Source(source), options, self.model, self.engine.multilingual)
        return PackedFile(wav, options, owner, run)

    def has_work(self) -> bool:
        return bool(self.pending) or bool(self.urgent)

    def prepare(self, f: PackedFile, index: int) -> Prepared:
        """What `BatchedInferencePipeline.transcribe` does before the model (VAD, chunks, features), per
        language span of the window as `FileRun.plan` plans it (detection calls on the model, from this
        thread)."""
        t0 = time.perf_counter()
        if not f.windows:
            return Prepared(f, index, [])
        assert f.run is not None
        window = f.run.plan(index)
        pieces = [(span, *self._chunks(window.span_samples(span), f.options.vad)) for span in window.spans]
        n_chunks = sum(len(chunks) for _, clips, chunks, _ in pieces if _speech(clips))
        nbytes = n_chunks * self.chunk_bytes
        self.budget.acquire(nbytes)
        parts: list[Part] = []
        try:
            for span, clips, chunks, metadata in pieces:
                feats = [fw.pad_or_trim(fw.features(self.model, c)) for c in chunks] if _speech(clips) else []
                offset = window.offset + span.start / audio.SAMPLE_RATE
                part = _Window(index, offset, clips, len(feats), span.language, restore=f.options.vad)
                parts.append(Part(part, feats, metadata if feats else []))
        except BaseException:
            self.budget.release(nbytes)
            raise
        f.prepare_s += time.perf_counter() - t0
        return Prepared(f, index, parts, nbytes)

    def _chunks(
        self, samples: np.ndarray, vad: bool
    ) -> tuple[list[dict[str, int]], list[np.ndarray], list[dict]]:
        """A span's speech chunks: VAD speech merged into <= 30 s, else `window_plan.fixed_chunks`."""
        if vad:
            return fw.speech_chunks(samples, self.chunk_length)
        clips = [{"start": a, "end": b} for a, b in fixed_chunks(samples.shape[0])]
        chunks = [samples[c["start"] : c["end"]] for c in clips]
        rate = audio.SAMPLE_RATE
        metadata = [{"offset": c["start"] / rate, "duration": (c["end"] - c["start"]) / rate} for c in clips]
        return clips, chunks, metadata

    def accept(self, prep: Prepared) -> None:
        """Queue a prepared window's chunks for the model, each span's under its language."""
        f = prep.file
        with self.lock:
            if f.failed:
                self.budget.release(prep.nbytes)
                return
            if f.first_batch_at is None:
                f.first_batch_at = time.perf_counter()
            f.windows_accepted += 1
            f.parts_total += len(prep.parts)
            queues = self.urgent if f.priority else self.pending
            for part in prep.parts:
                w = part.window
                if w.n_chunks == 0:
                    self._window_done(f, w)
                    continue
                queue = queues.setdefault((w.language, f.options), deque())
                for feats, meta in zip(part.features, part.metadata, strict=True):
                    queue.append(_Chunk(f, w, feats, meta))
            self._maybe_finished(f)

    # ---------------------------------------------------------------- model side (one thread)

    def take(self) -> tuple[Key, list[_Chunk]] | None:
        """The next batch: a full one if any queue has one, else the fullest queue's chunks.

        A queue whose oldest chunk has waited `max_wait_s` goes first whatever its size, so a request with
        rare options (its own prompt or language) is not starved by a stream of full batches of others.
        Priority chunks go before all of these (`_take_urgent`).
        """
        with self.lock:
            if self.urgent:
                return self._take_urgent()
            live = [(q[0].queued_at, len(q), key) for key, q in self.pending.items() if q]
            if not live:
                return None
            oldest = min(live, key=lambda item: item[0])
            full = [item for item in live if item[1] >= self.batch_size]
            if time.monotonic() - oldest[0] >= self.max_wait_s:
                key = oldest[2]
            elif full:
                key = min(full, key=lambda item: item[0])[2]
            else:
                key = max(live, key=lambda item: item[1])[2]
            queue = self.pending[key]
            items: list[_Chunk] = []
            while queue and len(items) < self.batch_size:
                c = queue.popleft()
                self.budget.release(self.chunk_bytes)
                if not c.file.failed:
                    items.append(c)
            if not queue:
                del self.pending[key]
            return key, items

    def _take_urgent(self) -> tuple[Key, list[_Chunk]]:
        """The oldest priority queue's chunks, topped up with ordinary chunks of the same key (they share the
        batch's options, and the batch costs about the same with them). Called with `lock` held."""
        key = min(self.urgent, key=lambda k: self.urgent[k][0].queued_at)
        items: list[_Chunk] = []
        for queues in (self.urgent, self.pending):
            queue = queues.get(key)
            while queue and len(items) < self.batch_size:
                c = queue.popleft()
                self.budget.release(self.chunk_bytes)
                if not c.file.failed:
                    items.append(c)
            if queue is not None and not queue:
                del queues[key]
        return key, items

    def run_next(self) -> bool:
        """Take one batch and run it; False when nothing was queued."""
        batch = self.take()
        if batch is None:
            return False
        self.run(*batch)
        return True

    def run(self, key: Key, items: list[_Chunk]) -> None:
        """Run the model on one batch; a failing batch is retried chunk by chunk to fail only its culprit."""
        if not items:
            return
        try:
            self._infer(items, key)
        except Exception as exc:  # noqa: BLE001 - find the chunk that breaks, fail only its file
            if len(items) == 1:
                self.fail(items[0].file, exc)
                return
            log.warning("packed batch failed; retrying its chunks one by one", extra={"error": str(exc)})
            for c in items:
                if c.file.failed:
                    continue
                try:
                    self._infer([c], key)
                except Exception as one:  # noqa: BLE001
                    self.fail(c.file, one)

    def _setup(self, key: Key) -> tuple[Any, Any]:
        """Tokenizer and decoding options for one key, built as the batched pipeline builds them."""
        if key in self._setups:
            self._setups.move_to_end(key)
        else:
            language, o = key
            self._setups[key] = fw.decoding_setup(
                self.model,
                language,
                o.beam_size,
                o.temperature,
                o.initial_prompt,
                o.word_timestamps,
                task=o.task,
            )
            if len(self._setups) > _SETUPS_KEPT:
                self._setups.popitem(last=False)
        return self._setups[key]

    def _infer(self, items: list[_Chunk], key: Key) -> None:
        tokenizer, opts = self._setup(key)
        features = np.stack([c.features for c in items])
        metadata = [c.metadata for c in items]
        encoder_output, per_item, sizes = fw.decode_batch(self.model, features, metadata, tokenizer, opts)
        if opts.word_timestamps:
            alignments = fw.find_alignment(self.model, tokenizer, per_item, encoder_output, sizes)
            i = 0
            while i < len(items):  # runs of one window: its chunks are consecutive and in order
                j = i
                while j < len(items) and items[j].window is items[i].window:
                    j += 1
                w = items[i].window
                w.last_speech = fw.add_word_timestamps(
                    self.model,
                    alignments[i:j],
                    per_item[i:j],
                    tokenizer,
                    encoder_output,
                    sizes[i:j],
                    opts,
                    w.last_speech,
                )
                i = j
        if self._on_batch is not None:
            self._on_batch(len(items), len({id(c.file) for c in items}))
        with self.lock:
            for c, item in zip(items, per_item, strict=True):
                f, w = c.file, c.window
                for s in item:
                    w.results.append(fw.segment(s, len(w.results) + 1, opts))
                w.done += 1
                if w.done == w.n_chunks and not f.failed:
                    self._window_done(f, w)

    def _window_done(self, f: PackedFile, w: _Window) -> None:
        if not w.results:
            restored = []
        elif w.restore:
            restored = fw.restore_speech_timestamps(w.results, w.clips)
        else:
            restored = w.results
        found = asr.from_faster_whisper(restored)
        for seg in found:
            seg.language = w.language
        assert f.run is not None
        f.run.add([asr.shift_segment(seg, w.offset_s) for seg in asr.split_segments(found)])
        w.results = []
        f.parts_done += 1
        self._maybe_finished(f)

    def _maybe_finished(self, f: PackedFile) -> None:
        """Hand the file on once every window is accepted and every span of them is decoded."""
        if f.finished or f.failed:
            return
        if f.windows_accepted >= len(f.windows) and f.parts_done >= f.parts_total:
            f.finished = True
            self._on_finished(f)

    def fail(self, f: PackedFile, exc: BaseException) -> None:
        """Fail one file: its queued chunks are dropped as they come up, and `on_failed` hears of it once."""
        with self.lock:
            if f.failed or f.finished:
                return
            f.failed = True
            f.error = exc
            self._on_failed(f, exc)

    # ---------------------------------------------------------------- results

    def conclude(self, f: PackedFile) -> AsrResult:
        """A finished file's transcription, as `Engine.transcribe` gives it (`FileRun.conclude`: the loss
        detector may decode stretches again, so call it off the model thread, which it waits for)."""
        assert f.run is not None
        return f.run.conclude(self.engine.retry)


def _speech(clips: list[dict[str, int]]) -> bool:
    return sum(c["end"] - c["start"] for c in clips) > 0


# ---------------------------------------------------------------- the service's driver


class PackerClosed(RuntimeError):
    pass


class SharedPacker:
    """Packs the chunks of concurrent `transcribe` calls (the service's workers) into shared batches.

    Each caller prepares its own file on its own thread and queues the chunks; one model thread runs
    batches of whatever is queued, across requests, as soon as the model is free (no waiting to fill a
    batch: while one batch runs, the next fills). A caller returns when its file's last chunk is done.
    """

    def __init__(
        self, engine: asr.Engine, batch_size: int, on_batch: Callable[[int, int], None] | None = None
    ) -> None:
        self.packer = Packer(engine, batch_size, self._settle, self._settle_failed, on_batch)
        self._wake = threading.Condition(self.packer.lock)
        self._files: dict[int, PackedFile] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._model_loop, name="packed-model", daemon=True)
        self._thread.start()

    def transcribe(self, reader: audio.WavReader, options: AsrOptions, priority: bool = False) -> AsrResult:
        """Transcribe one normalised WAV; blocks the calling thread until its last batch is done.
        `priority`: its chunks go into the next batches ahead of other files' (a streamed request)."""
        f = self.packer.open(reader.path, options)
        f.priority = priority
        return self._transcribe(f)

    def transcribe_samples(
        self, samples: np.ndarray, options: AsrOptions, priority: bool = True
    ) -> AsrResult:
        """Transcribe 16 kHz float32 audio held in memory (a live turn), ahead of files by default."""
        return self._transcribe(self.packer.open_samples(samples, options, priority))

    def _transcribe(self, f: PackedFile) -> AsrResult:
        packer = self.packer
        if not f.windows:
            return packer.conclude(f)
        with self._wake:
            if self._closed:
                raise PackerClosed("the service is shutting down")
            self._files[id(f)] = f
        try:
            for index in range(len(f.windows)):
                if f.failed:
                    break
                try:
                    prep = packer.prepare(f, index)
                except Exception as exc:  # noqa: BLE001 - this file fails; others go on
                    packer.fail(f, exc)
                    break
                with self._wake:
                    packer.accept(prep)
                    self._wake.notify_all()
            f.done.wait()
        finally:
            with self._wake:
                self._files.pop(id(f), None)
        if f.error is not None:
            raise f.error
        return packer.conclude(f)

    def _settle(self, f: PackedFile) -> None:
        f.done.set()

    def _settle_failed(self, f: PackedFile, _exc: BaseException) -> None:
        f.done.set()

    def _model_loop(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._closed and not self.packer.has_work():
                        self._wake.wait()
                    if self._closed:
                        return
                    batch = self.packer.take()
                if batch is not None:
                    self.packer.run(*batch)  # a file's failure is recorded on it, never raised here
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            log.exception("the packed model thread stopped")
            with self._wake:
                self._closed = True
                files = list(self._files.values())
            for f in files:
                self.packer.fail(f, PackerClosed(f"packed inference stopped: {exc}"))

    def close(self) -> None:
        """Stop the model thread after its current batch; calls still waiting fail with PackerClosed."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
            files = list(self._files.values())
        self.packer.budget.close()
        self._thread.join(timeout=60)
        for f in files:
            self.packer.fail(f, PackerClosed("the service shut down before this file was transcribed"))

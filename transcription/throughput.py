"""Throughput mode: keep the hardware busy across many files.

On CPU with no batch size set, files run in parallel, one per core, each through the per-file path
(`run_parallel`): CTranslate2's threads scale poorly within one file on few cores, so this is where the
throughput is there, and the text equals the per-file path. Otherwise (CUDA, or a batch size given), speech
from many files is packed into shared inference batches, as follows.

faster-whisper's `BatchedInferencePipeline` batches the 30 s speech chunks of one file, so a file of 8 s
fills one slot of a batch of 16 and the accelerator idles; decoding, feature extraction and writing also sit
in series with inference. Here:

- a claim (lease) and a decode run ahead on a small thread pool, and so does the CPU half of inference
  (reading the normalised WAV, Silero VAD, merging speech into <= 30 s chunks, log-Mel features);
- the calling thread only runs the model: chunks from any files go into one batch of up to `batch_size`
  (one batch per language, since the prompt names it), and each chunk's result goes back to its file;
- a finished file is handed to a writer thread (document, optional enrichment, validation, outputs), so
  writing overlaps the next batches.

Per chunk, the steps are those of `BatchedInferencePipeline.transcribe` (same VAD options, same chunking,
same features, same prompt, same word alignment, same timestamp restoration), and a file longer than
`asr.WINDOW_S` is cut into the same windows as `Engine.transcribe`, so the text equals the per-file batched
path (`--batch-size N`) apart from floating-point effects of a different batch composition.

Memory is bounded: features wait in memory only for prepared chunks not yet inferred (at most
`_feature_budget` bytes plus one window per preparing thread); the audio itself stays on disk.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import asr, audio, pipeline, schema
from .asr import AsrResult
from .config import Settings
from .layout import Input
from .schema import Segment

log = logging.getLogger(__name__)

_FEATURE_BUDGET_FLOOR = 256 << 20  # bytes of prepared features allowed to wait for a batch
_VAD_MIN_SILENCE_MS = 160  # BatchedInferencePipeline's VAD setting for batched chunks


# ---------------------------------------------------------------- state of one file in flight


@dataclass
class _Window:
    """One `asr.WINDOW_S` window of a file: its speech clips, chunks, and results as they come back."""

    index: int
    offset_s: float
    clips: list[dict[str, int]]  # VAD speech ranges in window samples, for timestamp restoration
    n_chunks: int
    restore: bool = True  # False when chunks are fixed 30 s pieces (no VAD): their times are already real
    done: int = 0
    last_speech: float = 0.0  # faster-whisper's word-timing state, carried chunk to chunk in a window
    results: list[Any] = field(default_factory=list)  # faster_whisper Segment, in window-chunk time


@dataclass
class _File:
    inp: Input
    lease: Any
    decode_s: float = 0.0
    duration: float = 0.0
    sha256: str | None = None
    frames: int = 0
    windows: list[tuple[int, int]] = field(default_factory=list)  # sample ranges, as asr.windows
    language: str | None = None
    language_probability: float | None = None
    segments: list[Segment] = field(default_factory=list)
    windows_done: int = 0
    prepare_s: float = 0.0
    first_batch_at: float | None = None
    failed: bool = False
    finished: bool = False


@dataclass
class _Prepared:
    """The CPU half of one window: ready for the model."""

    file: _File
    window: _Window
    features: list[np.ndarray]  # per chunk, (n_mels, 3000)
    metadata: list[dict[str, Any]]  # per chunk: offset/duration in the window's speech-only timeline
    detect_features: np.ndarray | None  # language detection input (first window, language unknown)
    nbytes: int = 0  # taken from the budget; given back as the chunks reach the model


@dataclass
class _Chunk:
    file: _File
    window: _Window
    features: np.ndarray
    metadata: dict[str, Any]


class _Budget:
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
                raise RuntimeError("throughput run stopped")
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used = max(0, self.used - n)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _Aligned:
    """Stands in for the model in `WhisperModel.add_word_timestamps`, serving alignments computed once
    for a whole packed batch, so faster-whisper's word-timing rules run per window with that window's own
    state (a batch mixes windows of several files; its alignment is a single model call)."""

    def __init__(self, alignments: list[Any], frames_per_second: float) -> None:
        self._alignments = alignments
        self.frames_per_second = frames_per_second

    def find_alignment(self, *_args: object, **_kwargs: object) -> list[Any]:
        return self._alignments


# ---------------------------------------------------------------- the packer


def auto_batch_size(engine: asr.Engine) -> int:
    """A batch size for packing on CUDA when none was set (`--batch-size` 1, the default).

    The free device memory over a per-item estimate from the model's shape (beam-search caches of the
    decoder's self- and cross-attention dominate), clamped to 4..32 and rounded down to a power of two.
    """
    free = _cuda_free_bytes()
    if free is None:
        return 16
    dims = _model_dims(engine)
    beams = 5
    bytes_per_value = 1 if engine.compute_type.startswith("int8") else 2
    layers, width = dims["decoder_layers"], dims["d_model"]
    cross = 2 * layers * beams * 1500 * width * bytes_per_value
    self_kv = 2 * layers * beams * 448 * width * bytes_per_value
    encoder = 4 * dims["encoder_layers"] * 1500 * width * 2
    per_item = cross + self_kv + encoder
    n = int(free * 0.6 // max(1, per_item))
    n = max(4, min(32, n))
    return 1 << (n.bit_length() - 1)


def _cuda_free_bytes() -> int | None:
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    except Exception:  # noqa: BLE001 - torch is optional; fall through to nvidia-smi
        pass
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(out.strip().splitlines()[0]) << 20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _model_dims(engine: asr.Engine) -> dict[str, int]:
    import json

    defaults = {"d_model": 1280, "decoder_layers": 32, "encoder_layers": 32}  # large-v3: the safe side
    try:
        cfg = json.loads((engine.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return defaults
    return {k: int(cfg.get(k, v)) for k, v in defaults.items()}


class _Packer:
    def __init__(self, processor: pipeline.Processor, batch_size: int, workers: int) -> None:
        from faster_whisper import BatchedInferencePipeline

        self.p = processor
        self.engine = processor.engine
        self.model = processor.engine.model  # faster_whisper.WhisperModel
        self.batched = BatchedInferencePipeline(self.model)
        self.batch_size = batch_size
        self.options = replace(processor.options, batch_size=batch_size)
        self.multilingual = bool(self.model.model.is_multilingual)
        self.chunk_length = int(self.model.feature_extractor.chunk_length)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
        self.written: list[Future] = []
        self.pending: dict[str, deque[_Chunk]] = {}
        self.chunk_bytes = self.model.model.n_mels * 3000 * 4  # one padded 30 s feature window
        self.budget = _Budget(max(_FEATURE_BUDGET_FLOOR, 3 * batch_size * self.chunk_bytes))
        self.workers = workers
        self._per_language: dict[str, tuple[Any, Any]] = {}

    # ---------------------------------------------------------------- CPU side (pool threads)

    def prepare_first(self, work: Any) -> _Prepared:
        """Wait for the decode, then prepare the file's first window."""
        decoded: pipeline.Decoded = work.decoded.result()
        f = _File(
            work.inp, work.lease, decode_s=decoded.seconds, duration=decoded.duration, sha256=decoded.sha256
        )
        reader = audio.WavReader(self.p.layout.wav_path(f.inp.stem))
        f.frames = reader.frames
        f.duration = reader.frames / audio.SAMPLE_RATE
        f.windows = asr.windows(reader, reader.frames) if reader.frames else []
        if self.options.language is not None or not self.multilingual:
            f.language = "en" if not self.multilingual else self.options.language
            f.language_probability = 1.0
        if not f.windows:
            return _Prepared(f, _Window(0, 0.0, [], 0), [], [], None)
        return self.prepare_window(f, 0)

    def prepare_window(self, f: _File, index: int) -> _Prepared:
        """What `BatchedInferencePipeline.transcribe` does before the model: VAD, chunks, features."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        t0 = time.perf_counter()
        start, end = f.windows[index]
        samples = audio.WavReader(self.p.layout.wav_path(f.inp.stem)).read(
            start / audio.SAMPLE_RATE, end / audio.SAMPLE_RATE
        )
        if self.options.vad:
            vad = VadOptions(
                max_speech_duration_s=self.chunk_length, min_silence_duration_ms=_VAD_MIN_SILENCE_MS
            )
            clips = get_speech_timestamps(samples, vad)
            chunks, metadata = collect_chunks(samples, clips, max_duration=self.chunk_length)
        else:  # as asr.Engine without VAD: consecutive 30 s pieces, given as clip timestamps
            seconds = samples.shape[0] / audio.SAMPLE_RATE
            clips = [
                {"start": int(t * audio.SAMPLE_RATE), "end": int(min(t + 30.0, seconds) * audio.SAMPLE_RATE)}
                for t in np.arange(0.0, seconds, 30.0)
            ]
            chunks = [samples[c["start"] : c["end"]] for c in clips]
            metadata = [
                {
                    "offset": c["start"] / audio.SAMPLE_RATE,
                    "duration": (c["end"] - c["start"]) / audio.SAMPLE_RATE,
                }
                for c in clips
            ]
        del samples
        speech = sum(c["end"] - c["start"] for c in clips)
        self.budget.acquire(len(chunks) * self.chunk_bytes if speech else 0)
        raw = [self.model.feature_extractor(c)[..., :-1] for c in chunks] if speech else []
        detect = None
        if index == 0 and f.language is None:
            # The same input as the per-file path's detection: all speech features, then a dummy frame.
            filler = np.full((self.model.model.n_mels, 1), -1.5, dtype="float32")
            detect = np.concatenate([*raw, filler], axis=1)[..., : self.model.feature_extractor.nb_max_frames]
        features = [pad_or_trim(r) for r in raw]
        if not features:
            metadata = []
        window = _Window(index, start / audio.SAMPLE_RATE, clips, len(features), restore=self.options.vad)
        f.prepare_s += time.perf_counter() - t0
        nbytes = len(chunks) * self.chunk_bytes if speech else 0
        return _Prepared(f, window, features, metadata, detect, nbytes)

    # ---------------------------------------------------------------- model side (calling thread)

    def _language_setup(self, language: str) -> tuple[Any, Any]:
        """Tokenizer and decoding options for one language, built as the batched pipeline builds them."""
        if language not in self._per_language:
            from faster_whisper.tokenizer import Tokenizer
            from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

            tok = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
            o = self.options
            temperature = 0.0 if o.temperature is None else float(o.temperature)
            opts = TranscriptionOptions(
                beam_size=o.beam_size,
                best_of=5,
                patience=1,
                length_penalty=1,
                repetition_penalty=1,
                no_repeat_ngram_size=0,
                log_prob_threshold=-1.0,
                no_speech_threshold=0.6,
                compression_ratio_threshold=2.4,
                temperatures=[temperature],
                initial_prompt=o.initial_prompt,
                prefix=None,
                suppress_blank=True,
                suppress_tokens=get_suppressed_tokens(tok, [-1]),
                prepend_punctuations="\"'“¿([{-",
                append_punctuations="\"'.。,，!！?？:：”)]}、",
                max_new_tokens=None,
                hotwords=None,
                word_timestamps=o.word_timestamps,
                hallucination_silence_threshold=None,
                condition_on_previous_text=False,
                clip_timestamps=[],
                prompt_reset_on_temperature=0.5,
                multilingual=False,
                without_timestamps=True,  # as asr.Engine: keeps every word; split_segments times them
                max_initial_timestamp=0.0,
            )
            self._per_language[language] = (tok, opts)
        return self._per_language[language]

    def accept(self, prep: _Prepared) -> None:
        """Queue a prepared window's chunks for the model (detecting the file's language first if needed)."""
        f, w = prep.file, prep.window
        if f.failed:
            self.budget.release(prep.nbytes)
            return
        if prep.detect_features is not None:
            language, probability, _ = self.model.detect_language(
                features=prep.detect_features,
                language_detection_segments=1,
                language_detection_threshold=0.5,
            )
            f.language, f.language_probability = language, float(probability)
        assert f.language is not None
        if f.first_batch_at is None:
            f.first_batch_at = time.perf_counter()
        if w.n_chunks == 0:
            self._window_done(f, w)
            return
        queue = self.pending.setdefault(f.language, deque())
        for feats, meta in zip(prep.features, prep.metadata, strict=True):
            queue.append(_Chunk(f, w, feats, meta))

    def full_language(self) -> str | None:
        for language, queue in self.pending.items():
            if len(queue) >= self.batch_size:
                return language
        return None

    def fullest_language(self) -> str | None:
        live = [(len(q), lang) for lang, q in self.pending.items() if q]
        return max(live)[1] if live else None

    def run_batch(self, language: str) -> None:
        queue = self.pending[language]
        items: list[_Chunk] = []
        while queue and len(items) < self.batch_size:
            c = queue.popleft()
            self.budget.release(self.chunk_bytes)
            if not c.file.failed:
                items.append(c)
        if not items:
            return
        try:
            self._infer(items, language)
        except Exception as exc:  # noqa: BLE001 - find the chunk that breaks, fail only its file
            if len(items) == 1:
                self.fail(items[0].file, exc)
                return
            log.warning("packed batch failed; retrying its chunks one by one", extra={"error": str(exc)})
            for c in items:
                if c.file.failed:
                    continue
                try:
                    self._infer([c], language)
                except Exception as one:  # noqa: BLE001
                    self.fail(c.file, one)

    def _infer(self, items: list[_Chunk], language: str) -> None:
        from faster_whisper.transcribe import Segment as FwSegment
        from faster_whisper.transcribe import WhisperModel
        from faster_whisper.transcribe import Word as FwWord

        tokenizer, opts = self._language_setup(language)
        features = np.stack([c.features for c in items])
        encoder_output, outputs = self.batched.generate_segment_batched(features, tokenizer, opts)
        fps = self.model.frames_per_second
        per_item: list[list[dict[str, Any]]] = []
        sizes: list[int] = []
        for c, out in zip(items, outputs, strict=True):
            duration, offset = c.metadata["duration"], c.metadata["offset"]
            size = int(math.ceil(duration) * fps)
            sizes.append(size)
            subsegments, _, _ = self.model._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=out["tokens"],
                time_offset=offset,
                segment_size=size,
                segment_duration=duration,
                seek=0,
            )
            per_item.append(
                [
                    {
                        "text": tokenizer.decode(s["tokens"]),
                        "tokens": s["tokens"],
                        "start": s["start"],
                        "end": s["end"],
                        "seek": int(offset * fps),
                        "avg_logprob": out["avg_logprob"],
                        "no_speech_prob": out["no_speech_prob"],
                    }
                    for s in subsegments
                ]
            )
        if opts.word_timestamps:
            text_tokens = [[t for s in item for t in s["tokens"] if t < tokenizer.eot] for item in per_item]
            alignments = self.model.find_alignment(tokenizer, text_tokens, encoder_output, sizes)
            i = 0
            while i < len(items):  # runs of one window: its chunks are consecutive and in order
                j = i
                while j < len(items) and items[j].window is items[i].window:
                    j += 1
                w = items[i].window
                last = WhisperModel.add_word_timestamps(
                    _Aligned(alignments[i:j], fps),  # type: ignore[arg-type]
                    per_item[i:j],
                    tokenizer,
                    encoder_output,
                    sizes[i:j],
                    opts.prepend_punctuations,
                    opts.append_punctuations,
                    w.last_speech,
                )
                w.last_speech = w.last_speech if last is None else last
                i = j
        for c, item in zip(items, per_item, strict=True):
            f, w = c.file, c.window
            for s in item:
                words = [FwWord(**x) for x in s["words"]] if opts.word_timestamps else None
                w.results.append(
                    FwSegment(
                        id=len(w.results) + 1,
                        seek=s["seek"],
                        start=round(s["start"], 3),
                        end=round(s["end"], 3),
                        text=s["text"],
                        tokens=s["tokens"],
                        avg_logprob=s["avg_logprob"],
                        compression_ratio=0.0,
                        no_speech_prob=s["no_speech_prob"],
                        words=words,
                        temperature=opts.temperatures[0],
                    )
                )
            w.done += 1
            if w.done == w.n_chunks:
                self._window_done(f, w)

    def _window_done(self, f: _File, w: _Window) -> None:
        from faster_whisper.transcribe import restore_speech_timestamps

        if not w.results:
            restored = []
        elif w.restore:
            restored = restore_speech_timestamps(w.results, w.clips, audio.SAMPLE_RATE)
        else:
            restored = w.results
        found = asr.from_faster_whisper(restored)
        f.segments.extend(asr.shift_segment(seg, w.offset_s) for seg in asr.split_segments(found))
        w.results = []
        f.windows_done += 1
        if f.windows_done >= len(f.windows):
            self._finished(f)

    # ---------------------------------------------------------------- results (writer thread)

    def _finished(self, f: _File) -> None:
        f.finished = True
        transcribe_s = time.perf_counter() - (f.first_batch_at or time.perf_counter())
        self.written.append(self.writer.submit(self._write, f, transcribe_s))

    def fail(self, f: _File, exc: BaseException) -> None:
        if f.failed or f.finished:
            return
        f.failed = True
        self.written.append(self.writer.submit(self._write_failure, f, exc))

    def _write_failure(self, f: _File, exc: BaseException) -> None:
        try:
            self.p._failed(f.inp, exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        finally:
            f.lease.release()

    def _write(self, f: _File, transcribe_s: float) -> None:
        inp = f.inp
        try:
            clean = schema.sanitize(f.segments, f.duration)
            warnings = [] if clean else (["no audio samples"] if not f.frames else ["no speech detected"])
            result = AsrResult(
                f.language, f.language_probability if f.frames else None, f.duration, clean, warnings
            )
            wav = self.p.layout.wav_path(inp.stem)
            doc = pipeline.build_document(
                result,
                self.engine,
                self.p.settings,
                self.options,
                file_label=inp.rel,
                source=inp.path,
                timings={"decode": f.decode_s, "prepare": f.prepare_s, "transcribe": transcribe_s},
                source_sha256=f.sha256,
            )
            doc = pipeline.complete(doc, audio.WavReader(wav), self.p.settings, self.p.settings.enrich)
            pipeline.write_outputs(self.p.layout, inp.stem, doc)
        except Exception as exc:  # noqa: BLE001 - one bad input never stops the batch
            self.p._failed(inp, exc)
            f.lease.release()
            return
        f.lease.release()
        self.p.succeeded(inp, f.duration, doc)

    def close(self) -> None:
        self.budget.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for fut in self.written:
            fut.result()  # _write and _write_failure catch per-file errors; anything else is a bug
        self.writer.shutdown(wait=True)


def strategy(settings: Settings) -> pipeline.Strategy:
    """The batch run's strategy in throughput mode."""
    return pipeline.Strategy(
        engine_workers=engine_workers(settings), decode_workers=prepare_workers(), run=run_packed
    )


def engine_workers(settings: Settings) -> int:
    """Concurrent transcriptions the engine is loaded for in throughput mode.

    CPU (unless a batch size was set): one worker per usable core, each file on one core, files in parallel
    (measured 2.0x the default single-file loop on 2 cores; see docs/BENCHMARKS.md). CUDA: one worker feeding
    packed batches.
    """
    if settings.resolved_device() == "cpu" and settings.batch_size <= 1:
        return asr.usable_cpus()
    return 1


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
                processor.finish(claimed)
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


def prepare_workers() -> int:
    return max(2, min(4, (os.cpu_count() or 2) - 1))


def run_packed(
    processor: pipeline.Processor,
    inputs: list[Input],
    stop: threading.Event,
    progress: Callable[[int, Input], None],
) -> None:
    """Transcribe `inputs` for throughput; per-file semantics as `Processor.run`.

    On CPU with no batch size set: files in parallel, one per core (`run_parallel`). Otherwise: chunks of
    several files packed into each batch. On `stop`, files already started are finished; claims not started
    are given back.
    """
    if processor.engine.device == "cpu" and processor.options.batch_size <= 1:
        run_parallel(processor, inputs, stop, progress)
        return
    batch_size = processor.options.batch_size
    if batch_size <= 1:
        batch_size = auto_batch_size(processor.engine)
    # Decoding runs on the processor's decode pool (sized by prepare_workers() in pipeline.run_batch).
    workers = prepare_workers()
    packer = _Packer(processor, batch_size, workers)
    log.info(
        "throughput mode",
        extra={"batch_size": batch_size, "prepare_workers": workers, "files": len(inputs)},
    )
    try:
        _loop(packer, iter(inputs), stop, progress)
    finally:
        packer.close()


def _loop(
    packer: _Packer,
    pending_inputs: Iterator[Input],
    stop: threading.Event,
    progress: Callable[[int, Input], None],
) -> None:
    processor = packer.p
    # prepare future -> its claim (a file's first window) or its _File (a later window of a long file)
    in_flight: dict[Future, Any] = {}
    files_ahead = max(4, 2 * packer.batch_size)  # leases held ahead of the model, bounded
    started = 0
    exhausted = False
    try:
        while True:
            if stop.is_set():
                _give_back_unstarted(packer, in_flight)
            # 1. Claim and prepare ahead.
            while not exhausted and not stop.is_set() and _firsts(in_flight) < files_ahead:
                work = processor.next_claim(pending_inputs, stop)
                if work is None:
                    exhausted = True
                    break
                in_flight[packer.pool.submit(packer.prepare_first, work)] = work
            # 2. Every prepared window goes into the batch queues, in order of completion.
            for fut in [f for f in in_flight if f.done()]:
                owner = in_flight.pop(fut)
                if not isinstance(owner, _File):
                    started += 1
                    progress(started, owner.inp)
                nxt = _take(packer, fut, owner)
                if nxt is not None:  # the next window of a long file is prepared while this one runs
                    in_flight[packer.pool.submit(packer.prepare_window, nxt[0], nxt[1])] = nxt[0]
            # 3. The model: a full batch if there is one; else, rather than wait for preparation,
            # whatever is queued; wait only when nothing is.
            language = packer.full_language() or packer.fullest_language()
            if language is not None:
                packer.run_batch(language)
            elif in_flight:
                wait(list(in_flight), return_when=FIRST_COMPLETED)
            elif exhausted or stop.is_set():
                break
    finally:
        for fut, owner in in_flight.items():  # an error escaped: nothing may keep a lease
            fut.cancel()
            if not isinstance(owner, _File):
                owner.decoded.cancel()
                if fut.cancelled():
                    owner.lease.release()
                else:
                    fut.add_done_callback(lambda _f, o=owner: o.lease.release())


def _firsts(in_flight: dict[Future, Any]) -> int:
    return sum(1 for owner in in_flight.values() if not isinstance(owner, _File))


def _give_back_unstarted(packer: _Packer, in_flight: dict[Future, Any]) -> None:
    """After a stop: files whose preparation has not reached the model are released, not processed."""
    for fut in [f for f, owner in in_flight.items() if not isinstance(owner, _File)]:
        owner = in_flight.pop(fut)
        fut.cancel()
        owner.decoded.cancel()
        if not fut.cancelled():
            with contextlib.suppress(Exception):  # a failed preparation holds no budget
                packer.budget.release(fut.result().nbytes)
        owner.lease.release()


def _take(packer: _Packer, fut: Future, owner: Any) -> tuple[_File, int] | None:
    """Queue one finished preparation; returns the long file's next window to prepare, if any."""
    try:
        prep: _Prepared = fut.result()
    except Exception as exc:  # noqa: BLE001 - decode or preparation failed: that file only
        packer.fail(owner if isinstance(owner, _File) else _File(owner.inp, owner.lease), exc)
        return None
    f = prep.file
    try:
        packer.accept(prep)
    except Exception as exc:  # noqa: BLE001 - language detection failed on this file
        packer.budget.release(prep.nbytes)
        packer.fail(f, exc)
        return None
    nxt = prep.window.index + 1
    return (f, nxt) if not f.failed and nxt < len(f.windows) else None

"""The faster-whisper engine: loaded once per process, shared by threads, bounded memory on long audio."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import fw_internals, hardware, languages, memory, models, recovery
from .audio import SAMPLE_RATE, WavReader
from .config import DECODING_FIELDS, DECODING_META_FIELDS, Settings, check_english_only
from .schema import Segment, Word
from .window_plan import AsrResult, FileRun, Source, Window, fixed_chunks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AsrOptions:
    language: str | None = None
    beam_size: int = 5
    batch_size: int | None = None  # None: not set (unbatched here, automatic when packing)
    word_timestamps: bool = True
    vad: bool = True
    condition_on_previous_text: bool = False
    hallucination_silence_threshold: float | None = 2.0
    initial_prompt: str | None = None
    temperature: float | None = None  # None: Whisper's temperature fallback schedule
    task: str = "transcribe"  # or "translate" (into English)
    language_detection: str = languages.CHUNK  # with language None: per speech chunk, or once per file
    languages: tuple[str, ...] | None = None  # detection chooses among these (None: any)
    recover: bool = True  # decode lost speech and loops again (off for live partials, redone anyway)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> AsrOptions:
        """The settings' decoding options (the fields declared `decoding`), then any overrides not None."""
        base = cls(**{name: getattr(settings, name) for name in DECODING_FIELDS})
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def meta_fields(self) -> dict[str, Any]:
        """The options a document's meta records, as they were used (`config.DECODING_META_FIELDS`); an
        unset batch size is recorded as 1, as documents always have."""
        out = {name: getattr(self, name) for name in DECODING_META_FIELDS}
        if "batch_size" in out:
            out["batch_size"] = out["batch_size"] or 1
        return out


@dataclass(eq=False)
class Engine:
    """One loaded Whisper model. `transcribe` may be called from several threads at once (up to `workers`)."""

    model: Any  # faster_whisper.WhisperModel
    name: str
    path: Path
    device: str
    compute_type: str
    load_seconds: float
    workers: int = 1
    _batched: Any = field(default=None, init=False, repr=False)  # the batched pipeline, made when first asked

    @classmethod
    def load(cls, settings: Settings, workers: int = 1, *, whole_machine_each: bool = False) -> Engine:
        """Load the model for `workers` concurrent transcriptions: on CPU they share the cores, or each may
        use all of them (`whole_machine_each`, the service's choice; see `hardware.cpu_threads`)."""
        from faster_whisper import WhisperModel

        memory.map_large_buffers()  # windows' buffers freed for good, before any is allocated
        path = models.resolve(settings.model, settings)
        device = settings.resolved_device()
        compute_type = settings.resolved_compute_type()
        started = time.perf_counter()
        try:
            model = WhisperModel(
                str(path),
                device=device,
                compute_type=compute_type,
                num_workers=workers,
                cpu_threads=hardware.cpu_threads(device, workers, whole_machine_each=whole_machine_each),
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise models.ModelError(
                f"cannot load model {settings.model!r} from {path} on {device} ({compute_type}): {exc}"
            ) from None
        elapsed = time.perf_counter() - started
        log.info(
            "model loaded",
            extra={
                "model": settings.model,
                "path": str(path),
                "device": device,
                "compute_type": compute_type,
                "seconds": round(elapsed, 3),
            },
        )
        engine = cls(model, settings.model, path, device, compute_type, elapsed, workers)
        # A local folder's name need not say it is English-only; the loaded model does.
        check_english_only(str(path), engine.multilingual, settings.language, settings.task)
        return engine

    @property
    def multilingual(self) -> bool:
        return fw_internals.is_multilingual(self.model)

    def _pipeline(self, options: AsrOptions) -> object:
        if not batched(options):
            return self.model
        if self._batched is None:
            from faster_whisper import BatchedInferencePipeline

            self._batched = BatchedInferencePipeline(self.model)
        return self._batched

    def transcribe(
        self,
        audio: np.ndarray | WavReader,
        options: AsrOptions,
        on_segment: Callable[[Segment], None] | None = None,
    ) -> AsrResult:
        """Transcribe 16 kHz mono audio (an array, or a WAV read window by window).

        `on_segment` hears each segment (in file time, before `sanitize`) as soon as it is decoded, on this
        thread; an exception it raises stops the transcription there (a streaming client that went away).
        """
        run = FileRun(Source(audio), options, self.model, self.multilingual)
        decode_options = options
        for index in range(len(run.windows)):
            # A window's samples (600 s: 38 MB) live only in the call: freed before the next is read.
            decode_options = self._decode_window(run, run.plan(index), decode_options, on_segment)
        return run.conclude(self.retry, on_segment)

    def _decode_window(
        self,
        run: FileRun,
        window: Window,
        decode_options: AsrOptions,
        on_segment: Callable[[Segment], None] | None,
    ) -> AsrOptions:
        """Decode a planned window's spans into `run`; the options for the next window (its prompt)."""
        for span in window.spans:
            decode_options = replace(decode_options, language=span.language)
            decoded = []
            for seg in self._run(window.span_samples(span), decode_options):  # decoded lazily, in turn
                seg.language = span.language
                decoded.append(shift_segment(shift_segment(seg, span.start / SAMPLE_RATE), window.offset))
                if on_segment is not None:
                    on_segment(decoded[-1])
            run.add(decoded)
            if run.options.condition_on_previous_text and decoded:
                decode_options = replace(
                    decode_options, initial_prompt=" ".join(s.text for s in decoded)[-400:]
                )
        return decode_options

    def retry(self, read: Callable[[float, float], np.ndarray], options: AsrOptions) -> recovery.Retry:
        """The loss detector's second decode of [start, end] s (`read` gives their samples): each part in its
        own language (detected per chunk when auto, even where the file was detected once: speech lost for
        being in another language would only come back translated), without VAD (the stretch is speech),
        without the previous text as prompt, one by one with Whisper's temperature fallback."""
        again_options = replace(
            options,
            language_detection=languages.CHUNK,
            recover=False,
            vad=False,
            batch_size=None,
            condition_on_previous_text=False,
            initial_prompt=None,
        )

        def again(start: float, end: float) -> list[Segment]:
            piece = read(start, end)
            if piece.shape[0] == 0:
                return []
            return [shift_segment(s, start) for s in self.transcribe(piece, again_options).segments]

        return again

    def _run(self, chunk: np.ndarray, o: AsrOptions) -> Iterator[Segment]:
        """A span's segments, decoded as they are iterated."""
        kwargs: dict[str, object] = dict(
            language=o.language,
            beam_size=o.beam_size,
            word_timestamps=o.word_timestamps,
            vad_filter=o.vad,
            condition_on_previous_text=o.condition_on_previous_text,
            initial_prompt=o.initial_prompt,
            task=o.task,
        )
        if o.temperature is not None:
            kwargs["temperature"] = o.temperature
        if o.word_timestamps and o.hallucination_silence_threshold is not None:
            kwargs["hallucination_silence_threshold"] = o.hallucination_silence_threshold
        pipeline = self._pipeline(o)
        if batched(o):
            kwargs["batch_size"] = o.batch_size
            kwargs.pop("condition_on_previous_text")  # batched chunks are independent by design
            if not o.vad:  # the batched pipeline needs explicit chunks then
                rate = SAMPLE_RATE
                kwargs["clip_timestamps"] = [
                    {"start": a / rate, "end": b / rate} for a, b in fixed_chunks(chunk.shape[0])
                ]
        raw, _ = pipeline.transcribe(chunk, **kwargs)  # type: ignore[attr-defined]
        out = iter_faster_whisper(raw)
        if batched(o):
            # A batched chunk comes back as one segment of up to 30 s; each is cut on its own.
            out = (piece for seg in out for piece in split_segments([seg]))
        return out


def batched(options: AsrOptions) -> bool:
    """Whether the per-file path uses faster-whisper's batched pipeline: a batch size above 1 was set."""
    return (options.batch_size or 1) > 1


def from_faster_whisper(raw: Iterable[Any]) -> list[Segment]:
    """faster-whisper's Segment/Word records as ours."""
    return list(iter_faster_whisper(raw))


def iter_faster_whisper(raw: Iterable[Any]) -> Iterator[Segment]:
    """faster-whisper's records as ours, one at a time as its generator decodes them."""
    for s in raw:
        words = [Word(w.word, float(w.start), float(w.end), float(w.probability)) for w in (s.words or [])]
        yield Segment(
            0, float(s.start), float(s.end), s.text, float(s.avg_logprob), float(s.no_speech_prob), words
        )


# Where a long segment may be cut: after a sentence end, or at a silence between words.
SPLIT_OVER_S = 8.0
_MIN_PIECE_S = 1.0
_SPLIT_GAP_S = 0.6
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")


def split_segments(segments: list[Segment]) -> list[Segment]:
    """Cut segments longer than SPLIT_OVER_S at sentence ends or pauses, using their word timings.

    faster-whisper's batched decoding without timestamps (its default, and the one that keeps every word)
    returns each chunk as a single segment; subtitles and per-segment prosody need sentence-sized pieces.
    """
    out: list[Segment] = []
    for seg in segments:
        if seg.end - seg.start <= SPLIT_OVER_S or len(seg.words) < 2:
            out.append(seg)
            continue
        piece: list[Word] = []
        for word, nxt in zip(seg.words, seg.words[1:], strict=False):
            piece.append(word)
            long_enough = word.end - piece[0].start >= _MIN_PIECE_S
            boundary = word.word.strip().endswith(_SENTENCE_END) or nxt.start - word.end >= _SPLIT_GAP_S
            if long_enough and boundary:
                out.append(_piece(seg, piece))
                piece = []
        piece.append(seg.words[-1])
        out.append(_piece(seg, piece))
    return out


def _piece(seg: Segment, words: list[Word]) -> Segment:
    start = seg.start if words[0] is seg.words[0] else words[0].start
    end = seg.end if words[-1] is seg.words[-1] else words[-1].end
    text = "".join(w.word for w in words).strip()
    return Segment(0, start, end, text, seg.avg_logprob, seg.no_speech_prob, list(words), seg.language)


def shift_segment(seg: Segment, offset: float) -> Segment:
    if offset == 0:
        return seg
    return Segment(
        seg.id,
        seg.start + offset,
        seg.end + offset,
        seg.text,
        seg.avg_logprob,
        seg.no_speech_prob,
        [Word(w.word, w.start + offset, w.end + offset, w.probability) for w in seg.words],
        seg.language,
    )

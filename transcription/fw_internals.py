"""faster-whisper's internals, behind one adapter.

Tested with faster-whisper 1.2.1 (pyproject.toml pins the tested range). Its documented API is
`WhisperModel(...)`, `WhisperModel.transcribe` and `BatchedInferencePipeline(...).transcribe`; everything
else the project uses of it is reached through this module, so an upgrade that moves an internal breaks
here, and tests/test_fw_internals.py names what moved (it checks every entry of `RELIES_ON`).

Why the internals: packed inference (packing.py) runs the two halves of `BatchedInferencePipeline
.transcribe` apart, the CPU half per file on any thread and the model half on batches mixing many files, so
it repeats that method's steps one by one: VAD (`get_speech_timestamps`, `collect_chunks`), features
(`FeatureExtractor`, `pad_or_trim`), the tokenizer and decoding options (`Tokenizer`,
`get_suppressed_tokens`, `TranscriptionOptions`), the batched decode
(`generate_segment_batched`, `_split_segments_by_timestamps`), word timing (`find_alignment`,
`add_word_timestamps`), and the records and time restoration of its output (`Segment`, `Word`,
`restore_speech_timestamps`). Its text equals the per-file batched path because each step is faster-whisper's
own; the decoding defaults are read from `BatchedInferencePipeline.transcribe`'s signature, not copied.
Language detection per speech chunk (languages.py) calls the CTranslate2 model's `detect_language` on short
feature windows, which faster-whisper's own `detect_language` pads to 30 s.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE

# Hard-coded in the body of `BatchedInferencePipeline.transcribe`, so not readable from its signature; the
# test checks they are still there (`Internal.source_has`).
VAD_MIN_SILENCE_MS = 160
_DETECT_FILLER = -1.5  # the dummy feature frame appended before language detection


@dataclass(frozen=True)
class Internal:
    """One faster-whisper internal the adapter relies on."""

    module: str
    name: str  # qualified name within the module, e.g. "WhisperModel.add_word_timestamps"
    why: str
    params: tuple[str, ...] = ()  # parameters passed by name (callables), or fields set (dataclasses)
    exact_fields: bool = False  # a dataclass built here: its fields must be exactly `params`
    defaults: tuple[str, ...] = ()  # parameters whose defaults are read from the signature
    self_uses: tuple[str, ...] | None = None  # called unbound on a stand-in: the only `self.` it may use
    source_has: tuple[str, ...] = ()  # literal code the adapter mirrors by hand

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


_T = "faster_whisper.transcribe"
_DECODE_DEFAULTS = (
    "best_of",
    "patience",
    "length_penalty",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "temperature",
    "compression_ratio_threshold",
    "log_prob_threshold",
    "no_speech_threshold",
    "prefix",
    "suppress_blank",
    "suppress_tokens",
    "without_timestamps",
    "prepend_punctuations",
    "append_punctuations",
    "multilingual",
    "max_new_tokens",
    "hotwords",
)
# TranscriptionOptions as the batched pipeline builds them: what its `transcribe` body sets whatever is passed
# (checked as `source_has`), its defaults (without_timestamps among them: every word kept, and
# asr.split_segments times them), and what each decode asks for (`decode_options`).
_PIPELINE_FIXED: dict[str, Any] = {
    "hallucination_silence_threshold": None,
    "condition_on_previous_text": False,
    "prompt_reset_on_temperature": 0.5,
    "max_initial_timestamp": 0.0,
}
_FROM_DEFAULTS = tuple(n for n in _DECODE_DEFAULTS if n not in ("temperature", "suppress_tokens"))
_PER_DECODE = (
    "beam_size",
    "temperatures",
    "initial_prompt",
    "suppress_tokens",
    "word_timestamps",
    "clip_timestamps",
)

RELIES_ON: dict[str, Internal] = {
    "batched_transcribe": Internal(
        _T,
        "BatchedInferencePipeline.transcribe",
        "the per-file batched path packing must equal: its defaults are the decoding options",
        defaults=_DECODE_DEFAULTS,
        source_has=(
            f"min_silence_duration_ms={VAD_MIN_SILENCE_MS}",
            *(f"{name}={value!r}" for name, value in _PIPELINE_FIXED.items()),
            f"{_DETECT_FILLER}",
        ),
    ),
    "TranscriptionOptions": Internal(
        _T,
        "TranscriptionOptions",
        "decoding options for generate_segment_batched, built as the batched pipeline builds them",
        params=(*_FROM_DEFAULTS, *_PIPELINE_FIXED, *_PER_DECODE),
        exact_fields=True,
    ),
    "generate_segment_batched": Internal(
        _T,
        "BatchedInferencePipeline.generate_segment_batched",
        "one model call on a batch of chunks from any files",
        params=("features", "tokenizer", "options"),
    ),
    "split_segments_by_timestamps": Internal(
        _T,
        "WhisperModel._split_segments_by_timestamps",
        "cuts a chunk's tokens into segments, as BatchedInferencePipeline.forward does",
        params=("tokenizer", "tokens", "time_offset", "segment_size", "segment_duration", "seek"),
    ),
    "SileroVADModel.__call__": Internal(
        "faster_whisper.vad",
        "SileroVADModel.__call__",
        "live turn detection runs its ONNX session block by block, carrying the LSTM state "
        "(service/realtime/vad.py)",
        source_has=('"h": h', '"c": c', "context_size_samples: int = 64"),
    ),
    "find_alignment": Internal(
        _T,
        "WhisperModel.find_alignment",
        "word alignment of a whole packed batch in one model call",
        params=("tokenizer", "text_tokens", "encoder_output", "num_frames"),
    ),
    "add_word_timestamps": Internal(
        _T,
        "WhisperModel.add_word_timestamps",
        "faster-whisper's word-timing rules, run per window on the batch's alignments",
        params=(
            "segments",
            "tokenizer",
            "encoder_output",
            "num_frames",
            "prepend_punctuations",
            "append_punctuations",
            "last_speech_timestamp",
        ),
        self_uses=("find_alignment", "frames_per_second"),
    ),
    "get_suppressed_tokens": Internal(
        _T,
        "get_suppressed_tokens",
        "the token ids suppressed by default (-1), as the batched pipeline expands them",
        params=("tokenizer", "suppress_tokens"),
    ),
    "Segment": Internal(
        _T,
        "Segment",
        "a decoded segment, as restore_speech_timestamps and asr.from_faster_whisper take it",
        params=(
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
            "words",
            "temperature",
        ),
        exact_fields=True,
    ),
    "Word": Internal(
        _T,
        "Word",
        "a timed word, built from add_word_timestamps' dicts",
        params=("start", "end", "word", "probability"),
        exact_fields=True,
    ),
    "restore_speech_timestamps": Internal(
        _T,
        "restore_speech_timestamps",
        "maps times in the speech-only timeline back to the window's",
        params=("segments", "speech_chunks", "sampling_rate"),
    ),
    "Tokenizer": Internal(
        "faster_whisper.tokenizer",
        "Tokenizer",
        "the prompt and decoding of one language's chunks",
        params=("tokenizer", "multilingual", "task", "language"),
    ),
    "Tokenizer.decode": Internal(
        "faster_whisper.tokenizer", "Tokenizer.decode", "segment text from tokens", params=("tokens",)
    ),
    "Tokenizer.eot": Internal(
        "faster_whisper.tokenizer", "Tokenizer.eot", "text tokens are those below it, for alignment"
    ),
    "VadOptions": Internal(
        "faster_whisper.vad",
        "VadOptions",
        "the batched pipeline's VAD settings",
        params=(
            "max_speech_duration_s",
            "min_silence_duration_ms",
            "speech_pad_ms",
            "threshold",
            "min_speech_duration_ms",
        ),
    ),
    "get_speech_timestamps": Internal(
        "faster_whisper.vad",
        "get_speech_timestamps",
        "Silero VAD speech ranges",
        params=("audio", "vad_options"),
    ),
    "collect_chunks": Internal(
        "faster_whisper.vad",
        "collect_chunks",
        "speech merged into chunks of at most 30 s",
        params=("audio", "chunks", "max_duration"),
    ),
    "pad_or_trim": Internal(
        "faster_whisper.audio", "pad_or_trim", "features padded to the encoder's 30 s", params=("array",)
    ),
    "FeatureExtractor": Internal(
        "faster_whisper.feature_extractor",
        "FeatureExtractor.__call__",
        "log-Mel features of one chunk",
        params=("waveform",),
    ),
}

# Attributes of a loaded `WhisperModel` used here (checked on a loaded model by the test).
MODEL_ATTRIBUTES: dict[str, str] = {
    "model.is_multilingual": "English-only models skip detection and the language token",
    "model.n_mels": "the feature shape, for the memory budget and the detection filler",
    "model.detect_language": "per-chunk language detection on short, batched feature windows (languages.py)",
    "hf_tokenizer": "the tokenizer's vocabulary",
    "frames_per_second": "chunk sizes in frames for timestamps and alignment",
    "feature_extractor.chunk_length": "the longest chunk, in seconds",
}


@functools.cache
def get(key: str) -> Any:
    """The internal named `key` in RELIES_ON, imported on first use."""
    entry = RELIES_ON[key]
    obj: Any = importlib.import_module(entry.module)
    for part in entry.name.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def decode_defaults() -> dict[str, Any]:
    """`BatchedInferencePipeline.transcribe`'s defaults for the options packing does not set itself."""
    params = inspect.signature(get("batched_transcribe")).parameters
    return {name: params[name].default for name in RELIES_ON["batched_transcribe"].defaults}


# ---------------------------------------------------------------- the loaded model


def is_multilingual(model: Any) -> bool:
    return bool(model.model.is_multilingual)


def n_mels(model: Any) -> int:
    return int(model.model.n_mels)


def chunk_length(model: Any) -> int:
    return int(model.feature_extractor.chunk_length)


# ---------------------------------------------------------------- CPU half: VAD, features, language detection


def speech_chunks(
    samples: np.ndarray, max_s: int
) -> tuple[list[dict[str, int]], list[np.ndarray], list[dict]]:
    """VAD speech ranges, and the speech merged into chunks of at most `max_s`, with their metadata."""
    vad = get("VadOptions")(max_speech_duration_s=max_s, min_silence_duration_ms=VAD_MIN_SILENCE_MS)
    clips = get("get_speech_timestamps")(samples, vad_options=vad)
    chunks, metadata = get("collect_chunks")(samples, clips, max_duration=max_s)
    return clips, chunks, metadata


def speech_ranges(
    samples: np.ndarray, min_silence_ms: int, pad_ms: int, max_s: float
) -> list[dict[str, int]]:
    """Silero VAD speech ranges (sample indices) with the given silence, padding and length limits."""
    vad = get("VadOptions")(
        max_speech_duration_s=max_s, min_silence_duration_ms=min_silence_ms, speech_pad_ms=pad_ms
    )
    return list(get("get_speech_timestamps")(samples, vad_options=vad))


def features(model: Any, chunk: np.ndarray) -> np.ndarray:
    """A chunk's log-Mel features, trimmed as the batched pipeline trims them (its last frame dropped)."""
    return model.feature_extractor(chunk)[..., :-1]


def pad_or_trim(feats: np.ndarray) -> np.ndarray:
    return get("pad_or_trim")(feats)


def fit_frames(feats: np.ndarray, frames: int) -> np.ndarray:
    """Features cut or padded (with the detection filler) to exactly `frames` frames."""
    feats = feats[..., :frames]
    if feats.shape[-1] < frames:
        pad = np.full((feats.shape[0], frames - feats.shape[-1]), _DETECT_FILLER, dtype=np.float32)
        feats = np.concatenate([feats, pad], axis=1)
    return np.ascontiguousarray(feats, dtype=np.float32)


def language_probabilities(model: Any, batch: np.ndarray) -> list[dict[str, float]]:
    """Every language's probability for each item of a batch of equal-length features (n, n_mels, frames).

    The CTranslate2 model takes windows shorter than 30 s; a 5 s window costs about a tenth of a full one,
    which is what makes a detection per speech chunk affordable."""
    import ctranslate2

    results = model.model.detect_language(ctranslate2.StorageView.from_array(batch))
    return [{token[2:-2]: float(p) for token, p in item} for item in results]


# ---------------------------------------------------------------- model half: decoding


def decoding_setup(
    model: Any,
    language: str,
    beam_size: int,
    temperature: float | None,
    initial_prompt: str | None,
    word_timestamps: bool,
    task: str = "transcribe",
) -> tuple[Any, Any]:
    """Tokenizer and TranscriptionOptions, built as `BatchedInferencePipeline.transcribe` builds them for
    `asr.Engine`'s arguments (`temperature` None: the default schedule, of which it uses the first; `task`
    "translate": the prompt asks for English, as faster-whisper's own `task` argument does)."""
    d = decode_defaults()
    tok = get("Tokenizer")(model.hf_tokenizer, is_multilingual(model), task=task, language=language)
    default_t = d["temperature"]
    if temperature is not None:
        temperatures = [float(temperature)]
    else:
        temperatures = list(default_t[:1]) if isinstance(default_t, list | tuple) else [default_t]
    suppress = d["suppress_tokens"]
    opts = get("TranscriptionOptions")(
        **{name: d[name] for name in _FROM_DEFAULTS},
        **_PIPELINE_FIXED,
        beam_size=beam_size,
        temperatures=temperatures,
        initial_prompt=initial_prompt,
        # a copy: get_suppressed_tokens extends the list it is given
        suppress_tokens=get("get_suppressed_tokens")(tok, list(suppress)) if suppress else suppress,
        word_timestamps=word_timestamps,
        clip_timestamps=[],  # per file; the batched decode does not read it
    )
    return tok, opts


def decode_batch(
    model: Any, feats: np.ndarray, metadata: list[dict[str, Any]], tokenizer: Any, opts: Any
) -> tuple[Any, list[list[dict[str, Any]]], list[int]]:
    """One model call on stacked chunk features: per chunk, its segments as dicts (in the window's
    speech-only time) and its size in frames, as `BatchedInferencePipeline.forward` makes them."""
    from faster_whisper import BatchedInferencePipeline

    encoder_output, outputs = get("generate_segment_batched")(
        BatchedInferencePipeline(model), features=feats, tokenizer=tokenizer, options=opts
    )
    fps = model.frames_per_second
    per_item: list[list[dict[str, Any]]] = []
    sizes: list[int] = []
    for meta, out in zip(metadata, outputs, strict=True):
        duration, offset = meta["duration"], meta["offset"]
        size = int(math.ceil(duration) * fps)
        sizes.append(size)
        subsegments, _, _ = get("split_segments_by_timestamps")(
            model,
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
    return encoder_output, per_item, sizes


def find_alignment(
    model: Any, tokenizer: Any, per_item: list[list[dict[str, Any]]], encoder_output: Any, sizes: list[int]
) -> list[Any]:
    """Word alignments for every chunk of a batch, in one model call."""
    text_tokens = [[t for s in item for t in s["tokens"] if t < tokenizer.eot] for item in per_item]
    return get("find_alignment")(
        model, tokenizer=tokenizer, text_tokens=text_tokens, encoder_output=encoder_output, num_frames=sizes
    )


class _Aligned:
    """Stands in for the model in `WhisperModel.add_word_timestamps`, serving alignments computed once for
    a whole packed batch, so faster-whisper's word-timing rules run per window with that window's own state
    (a batch mixes windows of several files; its alignment is a single model call). It offers exactly what
    that method uses of `self` (`RELIES_ON["add_word_timestamps"].self_uses`)."""

    def __init__(self, alignments: list[Any], frames_per_second: float) -> None:
        self._alignments = alignments
        self.frames_per_second = frames_per_second

    def find_alignment(self, *_args: object, **_kwargs: object) -> list[Any]:
        return self._alignments


def add_word_timestamps(
    model: Any,
    alignments: list[Any],
    segments: list[list[dict[str, Any]]],
    tokenizer: Any,
    encoder_output: Any,
    sizes: list[int],
    opts: Any,
    last_speech: float,
) -> float:
    """Add "words" to the segment dicts of one window's consecutive chunks; returns the window's new
    last-speech time (faster-whisper's word-timing state, carried chunk to chunk)."""
    last = get("add_word_timestamps")(
        _Aligned(alignments, model.frames_per_second),
        segments=segments,
        tokenizer=tokenizer,
        encoder_output=encoder_output,
        num_frames=sizes,
        prepend_punctuations=opts.prepend_punctuations,
        append_punctuations=opts.append_punctuations,
        last_speech_timestamp=last_speech,
    )
    return last_speech if last is None else last


# ---------------------------------------------------------------- results


def segment(s: dict[str, Any], seg_id: int, opts: Any) -> Any:
    """faster-whisper's Segment record for one decoded segment dict."""
    words = [get("Word")(**x) for x in s["words"]] if opts.word_timestamps else None
    return get("Segment")(
        id=seg_id,
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


def restore_speech_timestamps(segments: list[Any], clips: list[dict[str, int]]) -> Iterable[Any]:
    """Segments' times from the speech-only timeline back to the window's (a generator, as upstream)."""
    return get("restore_speech_timestamps")(segments, speech_chunks=clips, sampling_rate=SAMPLE_RATE)


# ---------------------------------------------------------------- live turn detection (realtime/vad.py)

RELIES_ON["get_vad_model"] = Internal(
    "faster_whisper.vad",
    "get_vad_model",
    "the bundled Silero model, whose ONNX session live turn detection runs block by block",
)
SILERO_INPUTS = frozenset({"input", "h", "c"})  # as SileroVADModel.__call__ feeds its session


class VadUnavailable(RuntimeError):
    pass


@functools.cache
def silero_session() -> Any:
    """The ONNX session of faster-whisper's bundled Silero model (`run` is safe from several threads); a
    faster-whisper whose model no longer has it, or feeds it other inputs, fails here, not silently."""
    session = getattr(get("get_vad_model")(), "session", None)
    names = {i.name for i in session.get_inputs()} if session is not None else set()
    if names != SILERO_INPUTS:
        raise VadUnavailable(
            f"faster_whisper.vad's Silero model changed (inputs {sorted(names)}, expected input, h, c); "
            "live turn detection needs it"
        )
    return session


# ---------------------------------------------------------------- the diarizer's speech finder


def diarizer_speech(
    samples: np.ndarray, threshold: float, min_silence_ms: int, pad_ms: int, min_speech_ms: int
) -> list[dict[str, int]]:
    """Silero VAD speech ranges (sample indices) with the diarizer's settings (diarize/speech.py)."""
    vad = get("VadOptions")(
        threshold=threshold,
        min_silence_duration_ms=min_silence_ms,
        speech_pad_ms=pad_ms,
        min_speech_duration_ms=min_speech_ms,
    )
    return list(get("get_speech_timestamps")(samples, vad_options=vad))

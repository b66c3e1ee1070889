"""The transcript document's shape, as `transcript.schema.json` describes it, for the modules that build,
change and render it. Plain dicts at run time (the document is JSON); the names tell a reader and a type
checker which fields each part has. A `_...Fields` base holds what the schema requires, the class itself
(total=False) what it allows."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

Level = Literal["very_low", "low", "normal", "high", "very_high"] | None


class _WordFields(TypedDict):
    word: str
    start: float
    end: float
    probability: float


class WordDoc(_WordFields, total=False):
    speaker: str | None


class Pitch(TypedDict):
    mean_hz: float | None
    std_hz: float | None
    min_hz: float | None
    max_hz: float | None
    slope_st_per_s: float | None
    level: Level


class Energy(TypedDict):
    rms_db: float | None
    std_db: float | None
    level: Level


class Rate(TypedDict):
    words_per_s: float | None
    syllables_per_s: float | None
    articulation_rate: float | None
    level: Level


class Pauses(TypedDict):
    count: int | None
    total_s: float | None
    longest_s: float | None


class Prosody(TypedDict, total=False):
    pitch: Pitch | None
    energy: Energy | None
    rate: Rate | None
    pauses: Pauses | None


class Emotion(TypedDict):
    arousal: float | None
    valence: float | None
    dominance: float | None
    model: str | None


class FeatureStatus(TypedDict):
    prosody: str  # "ok", "skipped" or "failed" in a finished document ("pending" while Stage 2 runs)
    emotion: str
    errors: list[str]


class _AudioStateFields(TypedDict):
    status: FeatureStatus


class AudioState(_AudioStateFields, total=False):
    prosody: Prosody | None
    emotion: Emotion | None
    rendering: str | None


class _SegmentFields(TypedDict):
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    words: list[WordDoc]


class SegmentDoc(_SegmentFields, total=False):
    speaker: str | None
    language: str | None  # the language it was decoded in
    audio_state: AudioState


class SpeakerDoc(TypedDict):
    id: str
    total_s: float


class TurnDoc(TypedDict):
    speaker: str
    start: float
    end: float


class LanguageShare(TypedDict):
    language: str
    seconds: float


class Span(TypedDict):
    start: float
    end: float


class Recovery(TypedDict, total=False):
    retried: int
    recovered: int


class _DiarizationFields(TypedDict):
    status: Literal["ok", "failed"]
    settings: dict[str, Any]


class DiarizationInfo(_DiarizationFields, total=False):
    method: str
    error: str
    splits: list[list[int]]  # the segment ids each engine segment was split into


class _MetaFields(TypedDict):
    model: str
    device: str
    compute_type: str
    batch_size: int
    beam_size: int
    vad: bool
    versions: dict[str, str | None]
    config_fingerprint: str
    source_sha256: str
    timings: dict[str, float]
    created_at: str


class Meta(_MetaFields, total=False):
    word_timestamps: bool
    task: str
    settings: dict[str, Any]
    source_size: int
    source_mtime_ns: int
    warnings: list[str]
    speech_without_text: list[Span]
    recovery: Recovery
    language_detection: str
    languages_allowed: list[str]
    enrichment: dict[str, Any]
    diarization: DiarizationInfo


class _TranscriptFields(TypedDict):
    schema_version: int
    file: str
    language: str | None
    language_probability: float | None
    duration: float
    text: str
    segments: list[SegmentDoc]
    meta: Meta


class Transcript(_TranscriptFields, total=False):
    languages: list[LanguageShare]
    speakers: list[SpeakerDoc]  # in order of first appearance
    turns: list[TurnDoc]

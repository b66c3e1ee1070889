"""Stage 2: enrich a transcript's segments with how they were spoken.

``enrich_document`` adds ``audio_state`` to every segment (prosody, emotion, a plain-words rendering and
a status) and records what ran in ``meta.enrichment`` and ``meta.timings``. It redoes only what is
missing or failed, so running it again after installing the emotion extra adds emotion and leaves
finished prosody untouched. See docs/enrichment.md for the fields and their honesty rules.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from transcription.audio import WavReader
from transcription.config import Settings
from transcription.doc_types import Transcript

from . import levels, prosody, render
from .emotion import (
    EmotionUnavailable,
    download_emotion_model,
    emotion_model_info,
    emotion_model_status,
    resolve_emotion_model,
)
from .source import AudioSource, as_source
from .status import FEATURES, mark_crashed, needs_enrichment

log = logging.getLogger(__name__)

__all__ = [
    "ENRICHMENT_VERSION",
    "EmotionUnavailable",
    "download_emotion_model",
    "emotion_model_info",
    "emotion_model_status",
    "enrich_document",
    "enrich_or_mark_failed",
    "needs_enrichment",
    "resolve_emotion_model",
]

ENRICHMENT_VERSION = "1"


def enrich_document(doc: Transcript, audio: np.ndarray | WavReader, settings: Settings) -> Transcript:
    """Add or complete ``audio_state`` on every segment of ``doc`` (in place) and return ``doc``.

    ``audio`` is the file's mono 16 kHz signal, the same samples Stage 1 transcribed: a float32 array, or
    the normalised WAV's reader, which Stage 2 then reads only window by window.
    """
    source = as_source(audio)
    segments: list[dict[str, Any]] = doc.get("segments") or []
    meta = doc.setdefault("meta", {})
    if not isinstance(meta.get("enrichment"), dict):
        meta["enrichment"] = {}
    if not isinstance(meta.get("timings"), dict):
        meta["timings"] = {}
    enrichment = meta["enrichment"]
    enrichment["version"] = ENRICHMENT_VERSION
    for seg in segments:
        seg["audio_state"] = _normalised_state(seg.get("audio_state"))

    for feature, enabled, run in (
        ("prosody", settings.prosody, _run_prosody),
        ("emotion", settings.emotion, _run_emotion),
    ):
        todo = [s for s in segments if s["audio_state"]["status"][feature] != "ok"]
        if not enabled:
            for seg in todo:  # finished values from an earlier run are kept; the rest is skipped
                _set_feature(seg, feature, None, "skipped", [])
            continue
        if todo:
            started = time.perf_counter()
            run(doc, todo, source, settings, enrichment)
            meta["timings"][feature] = round(time.perf_counter() - started, 4)

    levels.assign_levels(segments)
    for seg in segments:
        state = seg["audio_state"]
        span = _speech_span(seg)
        state["rendering"] = render.render(state, span, seg.get("speaker"))
    return doc


def _normalised_state(state: Any) -> dict[str, Any]:
    """A state with every key present. A feature counts as finished only when its status is ``ok`` and its
    value is an object; anything else (absent, skipped, failed, inconsistent) is pending and gets redone
    or skipped by this run, so every status written reflects this run or a finished earlier one."""
    state = state if isinstance(state, dict) else {}
    status = state.get("status") if isinstance(state.get("status"), dict) else {}
    errors = [e for e in status.get("errors") or [] if isinstance(e, str)]
    out: dict[str, Any] = {"rendering": state.get("rendering"), "status": {"errors": errors}}
    for feature in FEATURES:
        finished = status.get(feature) == "ok" and isinstance(state.get(feature), dict)
        out[feature] = state.get(feature) if finished else None
        out["status"][feature] = "ok" if finished else "pending"
    return {
        "prosody": out["prosody"],
        "emotion": out["emotion"],
        "rendering": out["rendering"],
        "status": {
            "prosody": out["status"]["prosody"],
            "emotion": out["status"]["emotion"],
            "errors": errors,
        },
    }


def _set_feature(
    seg: dict[str, Any], feature: str, value: dict | None, status: str, errors: list[str]
) -> None:
    """Replace one feature's value, status and errors, leaving the other feature's errors alone."""
    state = seg["audio_state"]
    state[feature] = value
    state["status"][feature] = status
    kept = [e for e in state["status"]["errors"] if not _belongs_to(e, feature)]
    state["status"]["errors"] = kept + errors


def _belongs_to(error: str, feature: str) -> bool:
    return error.startswith((f"{feature}:", f"{feature}."))


def _run_prosody(
    doc: dict, todo: list[dict[str, Any]], source: AudioSource, settings: Settings, enrichment: dict
) -> None:
    try:
        analysis = prosody.analyse_file(source, spans=[_span(seg) for seg in todo])
    except Exception as exc:  # noqa: BLE001 - any analysis failure is recorded per segment, not fatal
        for seg in todo:
            _set_feature(seg, "prosody", None, "failed", [f"prosody: analysis failed: {exc!r}"])
        enrichment["prosody"] = {"version": prosody.PROSODY_VERSION, "error": repr(exc)}
        return
    language = doc.get("language")
    for seg in todo:
        try:
            values, errors = prosody.segment_prosody(
                analysis,
                float(seg["start"]),
                float(seg["end"]),
                seg.get("words") or [],
                str(seg.get("text", "")),
                seg.get("language") or language,  # syllables are counted by the segment's own language
            )
        except Exception as exc:  # noqa: BLE001 - one bad segment must not cost the others their prosody
            _set_feature(seg, "prosody", None, "failed", [f"prosody: {exc!r}"])
            continue
        _set_feature(seg, "prosody", values, "ok", errors)
    enrichment["prosody"] = {
        "version": prosody.PROSODY_VERSION,
        "pitch": {
            "method": "normalised cross-correlation candidates + Viterbi path",
            "floor_hz": prosody.pitch_mod.FLOOR_HZ,
            "ceiling_hz": prosody.pitch_mod.CEILING_HZ,
            "hop_s": prosody.HOP_S,
            "min_max": "5th and 95th percentiles of voiced frames",
        },
        "analysed": {
            "scope": "whole file when it fits in one block, else each segment +- pad, merged when close",
            "block_s": prosody.BLOCK_S,
            "pad_s": prosody.REGION_PAD_S,
            "seconds": analysis.analysed_s,
        },
        "energy": {
            "window_s": prosody.ENERGY_WINDOW_S,
            "silence_threshold_dbfs": round(analysis.silence_db, 2),
        },
        "pause_min_s": prosody.PAUSE_MIN_S,
        "levels": {
            "baseline": "speaker's segments in this file (all segments without speaker labels)",
            "bands": "z <= -2 very_low, <= -1 low, < 1 normal, < 2 high, else very_high",
            "min_baseline_segments": levels.MIN_BASELINE_SEGMENTS,
        },
    }


def _run_emotion(
    doc: dict, todo: list[dict[str, Any]], source: AudioSource, settings: Settings, enrichment: dict
) -> None:
    spans = [(float(s["start"]), float(s["end"])) for s in todo]
    try:
        results, errors, meta = _score(source, spans, settings)
    except EmotionUnavailable as exc:
        for seg in todo:
            _set_feature(seg, "emotion", None, "failed", [f"emotion: {exc}"])
        enrichment["emotion"] = {"model": settings.emotion_model, "error": str(exc)}
        return
    for seg, value, errs in zip(todo, results, errors, strict=True):
        _set_feature(seg, "emotion", value, "ok", errs)
    enrichment["emotion"] = meta


def _score(source: AudioSource, spans: list[tuple[float, float]], settings: Settings):
    from .emotion import score_segments

    try:
        return score_segments(source, spans, settings)
    except EmotionUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. CUDA out of memory: emotion fails, the file still completes
        raise EmotionUnavailable(f"inference failed: {exc!r}") from exc


def _span(seg: dict[str, Any]) -> tuple[float, float]:
    """A segment's [start, end] for choosing what to analyse; unreadable times select nothing."""
    try:
        return float(seg["start"]), float(seg["end"])
    except (KeyError, TypeError, ValueError):
        return math.nan, math.nan


def _speech_span(seg: dict[str, Any]) -> float | None:
    try:
        return max(float(seg["end"]) - float(seg["start"]), 0.0)
    except (KeyError, TypeError, ValueError):
        return None


def enrich_or_mark_failed(doc: Transcript, audio: np.ndarray | WavReader, settings: Settings) -> Transcript:
    """`enrich_document`, except that a crash marks the unfinished features failed instead of raising:
    Stage 2 must never cost the Stage 1 result."""
    try:
        return enrich_document(doc, audio, settings)
    except Exception as exc:  # noqa: BLE001 - the transcript is kept whatever Stage 2 does
        log.exception("enrichment failed", extra={"file": doc.get("file")})
        mark_crashed(doc, f"enrichment crashed: {type(exc).__name__}: {exc}")
        return doc

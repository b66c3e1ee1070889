"""Stage 2's status rules: whether a document has enrichment work left, and what a crash leaves behind."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transcription.config import Settings

FEATURES = ("prosody", "emotion")


def wanted_features(settings: Settings) -> list[str]:
    return [f for f, on in (("prosody", settings.prosody), ("emotion", settings.emotion)) if on]


def needs_enrichment(doc: dict[str, Any], settings: Settings, retry_failed: bool) -> bool:
    """Whether Stage 2 has work: a segment never enriched, a feature now enabled, or (when asked) failed."""
    if not settings.enrich:
        return False
    wanted = wanted_features(settings)
    redo = {"skipped", "failed"} if retry_failed else {"skipped"}
    for seg in doc["segments"]:
        status = (seg.get("audio_state") or {}).get("status")
        if status is None or any(status.get(f) in redo or f not in status for f in wanted):
            return True
    return False


def mark_crashed(doc: dict[str, Any], reason: str) -> None:
    """After Stage 2 crashed: every feature not finished is `failed` with the reason, on every segment."""
    for seg in doc["segments"]:
        state = seg.setdefault("audio_state", {})
        status = state.setdefault("status", {"prosody": "failed", "emotion": "failed", "errors": []})
        for feature in FEATURES:
            if status.get(feature) != "ok":
                status[feature] = "failed"
        status["errors"] = [*status.get("errors", []), reason]
    doc["meta"].setdefault("warnings", []).append(reason)

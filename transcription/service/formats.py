"""Response bodies for each `response_format`, following OpenAI's transcription shapes."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from transcription import writers
from transcription.config import LANGUAGE_NAMES  # verbose_json reports the language by name, as OpenAI
from transcription.doc_types import Transcript
from transcription.recovery import compression_ratio

from .errors import ApiError

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json", "slower_whisper_json")
RESULT_FORMATS = ("json", "txt", "srt", "vtt", "rttm", "verbose_json", "diarized_json")


def language_name(code: str | None) -> str:
    if not code:
        return "unknown"
    return LANGUAGE_NAMES.get(code, code)


def task(doc: Transcript) -> str:
    """What the document's text is: `transcribe` (the spoken language) or `translate` (into English)."""
    return (doc.get("meta") or {}).get("task") or "transcribe"


def verbose_json(doc: Transcript, granularities: list[str]) -> dict[str, Any]:
    """OpenAI's verbose_json: segments unless only words were asked for, words when asked for. A translation
    reports its task and, as OpenAI's, the language of its text (English); the document keeps the spoken
    one."""
    task_name = task(doc)
    out: dict[str, Any] = {
        "task": task_name,
        "language": language_name("en" if task_name == "translate" else doc.get("language")),
        "duration": doc.get("duration", 0.0),
        "text": doc.get("text", ""),
    }
    if not granularities or "segment" in granularities:
        segments = []
        for seg in doc.get("segments", []):
            item = {
                "id": seg["id"],
                "start": seg["start"],
                "end": seg["end"],
                "text": seg["text"],
                "avg_logprob": seg.get("avg_logprob"),
                "no_speech_prob": seg.get("no_speech_prob"),
                "compression_ratio": round(compression_ratio(seg["text"]), 4),
            }
            # Fields our document may carry beyond the schema's minimum pass through untouched.
            for key in ("seek", "tokens", "temperature"):
                if key in seg:
                    item[key] = seg[key]
            segments.append(item)
        out["segments"] = segments
    if "word" in granularities:
        out["words"] = [
            {"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
            for seg in doc.get("segments", [])
            for w in seg.get("words", [])
        ]
    out["usage"] = {"type": "duration", "seconds": doc.get("duration", 0.0)}
    return out


def diarized_json(doc: Transcript) -> dict[str, Any]:
    """OpenAI's `diarized_json`: the text, and segments with their speaker."""
    return {
        "task": task(doc),
        "duration": doc.get("duration", 0.0),
        "text": doc.get("text", ""),
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{seg['id']}",
                "start": seg["start"],
                "end": seg["end"],
                "text": seg["text"],
                "speaker": seg.get("speaker") or "unknown",
            }
            for seg in doc.get("segments", [])
        ],
        "usage": {"type": "duration", "seconds": doc.get("duration", 0.0)},
    }


def transcription_response(doc: Transcript, response_format: str, granularities: list[str]) -> Response:
    if response_format == "json":
        return JSONResponse({"text": doc.get("text", "")})
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(doc, granularities))
    if response_format == "slower_whisper_json":
        return JSONResponse(doc)
    if response_format == "diarized_json":
        return JSONResponse(diarized_json(doc))
    if response_format == "text":
        # OpenAI's `text` is the bare transcript; the timestamped TXT file is the jobs API's `format=txt`.
        return PlainTextResponse(doc.get("text", "") + "\n")
    if response_format in ("srt", "vtt"):
        media = "text/vtt" if response_format == "vtt" else "application/x-subrip"
        return Response(writers.render(doc, response_format), media_type=f"{media}; charset=utf-8")
    raise ApiError(
        400, f"unknown response_format {response_format!r}", "invalid_value", param="response_format"
    )


def result_response(doc: Transcript, fmt: str) -> Response:
    """A finished job's result in one of RESULT_FORMATS."""
    if fmt == "json":
        return Response(json.dumps(doc, ensure_ascii=False), media_type="application/json")
    if fmt == "verbose_json":
        return JSONResponse(verbose_json(doc, ["segment", "word"]))
    if fmt == "txt":
        return PlainTextResponse(writers.render(doc, "txt"))
    if fmt in ("diarized_json", "rttm") and "speakers" not in doc:
        raise ApiError(400, "this job ran without diarize: it has no speakers", "no_speakers", param="format")
    if fmt == "diarized_json":
        return JSONResponse(diarized_json(doc))
    if fmt == "rttm":
        return PlainTextResponse(writers.render(doc, "rttm"))
    if fmt in ("srt", "vtt"):
        return transcription_response(doc, fmt, [])
    raise ApiError(
        400,
        f"unknown format {fmt!r}; expected one of {', '.join(RESULT_FORMATS)}",
        "invalid_value",
        param="format",
    )

"""Output formats: one small writer per format behind `get_writer`, all rendering from the JSON document."""

from __future__ import annotations

import json
from typing import Any

FORMATS = ("json", "txt", "srt", "vtt")
TEXT_FORMATS = ("txt", "srt", "vtt")


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(seg: dict[str, Any]) -> str:
    # A cue never holds a blank line (it would end the cue) nor the "-->" arrow (it would look like a timing).
    text = " ".join(seg["text"].split())
    return text.replace("-->", "->")


class Writer:
    extension = ""

    def render(self, doc: dict[str, Any]) -> str:
        raise NotImplementedError


class JsonWriter(Writer):
    extension = "json"

    def render(self, doc: dict[str, Any]) -> str:
        return json.dumps(doc, ensure_ascii=False, indent=2) + "\n"


class TxtWriter(Writer):
    """One timestamped line per segment, with the audio rendering when Stage 2 ran."""

    extension = "txt"

    def render(self, doc: dict[str, Any]) -> str:
        lines = []
        for seg in doc["segments"]:
            line = f"[{_clock(seg['start'], '.')} --> {_clock(seg['end'], '.')}] {_cue_text(seg)}"
            rendering = (seg.get("audio_state") or {}).get("rendering")
            if rendering:
                line += f" {rendering}"
            lines.append(line)
        return "\n".join(lines) + ("\n" if lines else "")


class SrtWriter(Writer):
    extension = "srt"

    def render(self, doc: dict[str, Any]) -> str:
        cues = []
        for n, seg in enumerate(doc["segments"], start=1):
            cues.append(f"{n}\n{_clock(seg['start'], ',')} --> {_clock(seg['end'], ',')}\n{_cue_text(seg)}\n")
        return "\n".join(cues)


class VttWriter(Writer):
    extension = "vtt"

    def render(self, doc: dict[str, Any]) -> str:
        cues = ["WEBVTT\n"]
        for seg in doc["segments"]:
            cues.append(f"{_clock(seg['start'], '.')} --> {_clock(seg['end'], '.')}\n{_cue_text(seg)}\n")
        return "\n".join(cues)


_WRITERS: dict[str, type[Writer]] = {"json": JsonWriter, "txt": TxtWriter, "srt": SrtWriter, "vtt": VttWriter}


def get_writer(fmt: str) -> Writer:
    try:
        return _WRITERS[fmt]()
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}") from None


def render(doc: dict[str, Any], fmt: str) -> str:
    return get_writer(fmt).render(doc)

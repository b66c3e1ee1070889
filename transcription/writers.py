"""Output formats: one small writer per format behind `get_writer`, all rendering from the JSON document."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath

from .doc_types import SegmentDoc, Transcript

FORMATS = ("json", "txt", "srt", "vtt", "rttm")
TEXT_FORMATS = ("txt", "srt", "vtt")
"""Written for every document; `rttm` only for documents with speakers."""


def _clock(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cue_text(seg: SegmentDoc) -> str:
    # A cue never holds a blank line (it would end the cue) nor the "-->" arrow (it would look like a timing).
    text = " ".join(seg["text"].split())
    return text.replace("-->", "->")


def _speaker(seg: SegmentDoc) -> str | None:
    label = seg.get("speaker")
    return " ".join(str(label).split()) if label else None


def _prefixed(seg: SegmentDoc) -> str:
    """The cue text after its speaker, `SPEAKER_00: text`, as TXT and SRT show it."""
    speaker = _speaker(seg)
    return f"{speaker}: {_cue_text(seg)}" if speaker else _cue_text(seg)


def _vtt_escape(text: str) -> str:
    """Cue text as WebVTT reads it: `&` and `<` start markup (a `>` inside a voice tag would end it)."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


class Writer:
    extension = ""

    def render(self, doc: Transcript) -> str:
        raise NotImplementedError


# A non-empty array of numbers (or nulls) as `json.dumps(indent=2)` lays it out, one item per line. The
# opening bracket is followed by a newline, which never occurs raw inside a JSON string, so the pattern can
# only match real arrays.
_NUMBER = r"(?:-?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|Infinity)|NaN|null)"
_NUMBER_ARRAY = re.compile(rf"\[\n *{_NUMBER}(?:,\n *{_NUMBER})*\n *\]")


def _one_line(match: re.Match[str]) -> str:
    return "[" + ", ".join(item.strip() for item in match.group()[1:-1].split(",")) + "]"


class JsonWriter(Writer):
    """Indented for people to read, except arrays of numbers (the prosody contours), which go on one line:
    one value per line made the contours a third of the file."""

    extension = "json"

    def render(self, doc: Transcript) -> str:
        return _NUMBER_ARRAY.sub(_one_line, json.dumps(doc, ensure_ascii=False, indent=2)) + "\n"


class TxtWriter(Writer):
    """One timestamped line per segment, with the audio rendering when Stage 2 ran."""

    extension = "txt"

    def render(self, doc: Transcript) -> str:
        lines = []
        for seg in doc["segments"]:
            line = f"[{_clock(seg['start'], '.')} --> {_clock(seg['end'], '.')}] {_prefixed(seg)}"
            rendering = (seg.get("audio_state") or {}).get("rendering")
            if rendering:
                line += f" {rendering}"
            lines.append(line)
        return "\n".join(lines) + ("\n" if lines else "")


class SrtWriter(Writer):
    extension = "srt"

    def render(self, doc: Transcript) -> str:
        cues = []
        for n, seg in enumerate(doc["segments"], start=1):
            cues.append(f"{n}\n{_clock(seg['start'], ',')} --> {_clock(seg['end'], ',')}\n{_prefixed(seg)}\n")
        return "\n".join(cues)


class VttWriter(Writer):
    extension = "vtt"

    def render(self, doc: Transcript) -> str:
        cues = ["WEBVTT\n"]
        for seg in doc["segments"]:
            text = _vtt_escape(_cue_text(seg))
            speaker = _speaker(seg)
            if speaker:  # the voice span: players show the name and can style each voice
                text = f"<v {_vtt_escape(speaker).replace('>', '&gt;')}>{text}"
            cues.append(f"{_clock(seg['start'], '.')} --> {_clock(seg['end'], '.')}\n{text}\n")
        return "\n".join(cues)


class RttmWriter(Writer):
    """NIST RTTM: one SPEAKER line per diarization turn. The file id is the input's name without its
    folder and extension, whitespace as underscores (RTTM fields are separated by spaces)."""

    extension = "rttm"

    def render(self, doc: Transcript) -> str:
        file_id = "_".join(PurePosixPath(str(doc.get("file") or "audio")).stem.split()) or "audio"
        lines = []
        for t in doc.get("turns", []):
            speaker = "_".join(t["speaker"].split())
            duration = max(0.0, t["end"] - t["start"])
            lines.append(f"SPEAKER {file_id} 1 {t['start']:.3f} {duration:.3f} <NA> <NA> {speaker} <NA> <NA>")
        return "\n".join(lines) + ("\n" if lines else "")


_WRITERS: dict[str, type[Writer]] = {
    "json": JsonWriter,
    "txt": TxtWriter,
    "srt": SrtWriter,
    "vtt": VttWriter,
    "rttm": RttmWriter,
}


def get_writer(fmt: str) -> Writer:
    try:
        return _WRITERS[fmt]()
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}") from None


def render(doc: Transcript, fmt: str) -> str:
    return get_writer(fmt).render(doc)

"""Speakers in requests: the `diarize` and speaker-count fields, and OpenAI's known-speaker references.

References are read in two steps: `references` checks the fields as the request is parsed (names, counts,
the data URLs' form: cheap), and `decode_references` decodes the clips in the request's worker, inside its
admission like the rest of its audio, and never more than 10 s of each however long a clip is."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from transcription import audio, speakers
from transcription.config import MAX_SPEAKERS, ConfigError, Settings, check_speaker_counts

from .errors import ApiError
from .uploads import MAX_KNOWN_SPEAKERS, Upload

REFERENCE_MIN_S, REFERENCE_MAX_S = 2.0, 10.0
_SLACK_S = 0.05  # a "10 s" clip cut by an editor may be a few samples longer
_NO_WHITESPACE = str.maketrans("", "", " \t\r\n\f\v")


@dataclass(frozen=True)
class SpeakerOptions:
    """What a request asks of diarization; `None` fields fall back to the server's settings."""

    diarize: bool | None = None
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, opts: dict[str, Any]) -> SpeakerOptions:
        """From a request's options (a job record keeps them as a dict)."""
        return cls(**{f.name: opts.get(f.name) for f in dataclasses.fields(cls)})

    def apply(self, settings: Settings) -> Settings:
        """The settings this request runs with."""
        changes = {k: v for k, v in self.to_dict().items() if v is not None}
        return dataclasses.replace(settings, **changes) if changes else settings


def parse(upload: Upload, settings: Settings, response_format: str) -> SpeakerOptions:
    """`diarize`, `num_speakers`, `min_speakers`, `max_speakers`; `diarized_json` implies `diarize`."""
    diarize = upload.get_bool("diarize")
    if response_format == "diarized_json":
        if diarize is False:
            raise ApiError(
                400, "response_format diarized_json needs diarize", "invalid_value", param="diarize"
            )
        diarize = True
    counts = {
        name: _count(upload.get(name), name) for name in ("num_speakers", "min_speakers", "max_speakers")
    }
    options = SpeakerOptions(diarize, **counts)
    effective = options.apply(settings)
    try:
        check_speaker_counts(effective.num_speakers, effective.min_speakers, effective.max_speakers)
    except ConfigError as exc:
        message = str(exc).replace("DIARIZATION_NUM_SPEAKERS", "num_speakers")
        message = message.replace("DIARIZATION_MIN_SPEAKERS", "min_speakers")
        message = message.replace("DIARIZATION_MAX_SPEAKERS", "max_speakers")
        raise ApiError(400, message, "invalid_value", param="num_speakers") from None
    if not effective.diarize and (any(counts.values()) or _names(upload)):
        raise ApiError(
            400,
            "speaker counts and known speakers need diarize=true (or response_format=diarized_json)",
            "invalid_value",
            param="diarize",
        )
    return options


@dataclass(frozen=True)
class Reference:
    """A known speaker: the name given, and the clip of the voice (audio bytes in any format)."""

    name: str
    clip: bytes


def references(upload: Upload) -> list[Reference]:
    """OpenAI's `known_speaker_names[]` with `known_speaker_references[]` (data URLs of 2-10 s clips in any
    format ffmpeg reads), checked but not decoded; a field that cannot be used is a 400 naming it."""
    names = _names(upload)
    refs = _references(upload)
    if not names and not refs:
        return []
    if len(names) != len(refs):
        raise ApiError(
            400,
            f"known_speaker_names[] ({len(names)}) and known_speaker_references[] ({len(refs)}) "
            "must have the same number of entries",
            "invalid_value",
            param="known_speaker_references",
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise ApiError(
            400, f"at most {MAX_KNOWN_SPEAKERS} known speakers", "invalid_value", param="known_speaker_names"
        )
    out: dict[str, Reference] = {}
    for raw_name, ref in zip(names, refs, strict=True):
        try:
            name = speakers.clean_name(raw_name)
        except speakers.NameTaken as exc:
            raise ApiError(
                400,
                f"known speaker name {raw_name!r}: {exc}",
                "invalid_speaker_reference",
                param="known_speaker_names",
            ) from None
        except ValueError as exc:
            raise ApiError(400, f"known speaker name {raw_name!r}: {exc}", "invalid_value") from None
        if name in out:
            raise ApiError(400, f"known speaker {name!r} is named twice", "invalid_value")
        out[name] = Reference(name, _clip(name, ref))
    return list(out.values())


def decode_references(refs: list[Reference]) -> dict[str, np.ndarray]:
    """The clips as 16 kHz mono, each decoded no further than its limit; one that is not 2-10 s of audio is
    a 400 naming it. Runs in the request's worker thread."""
    out: dict[str, np.ndarray] = {}
    for ref in refs:
        try:
            pcm = audio.decode_clip(ref.clip, "the clip", REFERENCE_MAX_S + _SLACK_S)
        except audio.TooLong:
            raise _refused(ref.name, "the clip lasts more than 10 s; it must last 2 to 10 seconds") from None
        except audio.DecodeError:
            raise _refused(ref.name, "the clip is not decodable audio") from None
        duration = pcm.shape[0] / audio.SAMPLE_RATE
        if duration < REFERENCE_MIN_S:
            raise _refused(ref.name, f"the clip lasts {duration:.1f} s; it must last 2 to 10 seconds")
        out[ref.name] = pcm
    return out


def has_references(upload: Upload) -> bool:
    return bool(_names(upload) or _references(upload))


def _references(upload: Upload) -> list[str]:
    return upload.get_all("known_speaker_references[]") + upload.get_all("known_speaker_references")


def _names(upload: Upload) -> list[str]:
    return upload.get_all("known_speaker_names[]") + upload.get_all("known_speaker_names")


def _refused(name: str, why: str) -> ApiError:
    return ApiError(
        400,
        f"known speaker reference for {name!r}: {why}",
        "invalid_speaker_reference",
        param="known_speaker_references",
    )


def _clip(name: str, data_url: str) -> bytes:
    header, comma, payload = data_url.strip().partition(",")
    if not comma or not header.lower().startswith("data:") or not header.lower().endswith(";base64"):
        raise _refused(name, "expected a base64 data URL (data:audio/...;base64,...)")
    try:
        # Standard whitespace is allowed inside: `base64` and MIME wrap their lines.
        return base64.b64decode(payload.translate(_NO_WHITESPACE), validate=True)
    except (binascii.Error, ValueError):
        raise _refused(name, "the data URL is not valid base64") from None


def _count(raw: str | None, name: str) -> int | None:
    if raw in (None, ""):
        return None
    text = raw.strip()
    # ASCII digits only, as every number in the API: `int` would also read "٣" or "３" as 3.
    value = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= value <= MAX_SPEAKERS:
        raise ApiError(
            400, f"{name} must be a whole number from 1 to {MAX_SPEAKERS}", "invalid_value", param=name
        )
    return value

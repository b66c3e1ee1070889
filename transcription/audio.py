"""Decode any audio or video to 16 kHz mono PCM WAV, streaming, and read it back in bounded windows.

The normalised WAV is the one decode of a file: Stage 1 and Stage 2 both read their samples from it, and
it is read back in windows, so a two-hour recording never has to sit in memory whole. A short clip held in
memory (a speaker reference) is decoded to an array instead (`decode_clip`). Both decodes stop at a
`Limit`: a tiny file can hold days of audio (long blocks of silence compress to almost nothing), so its
length is known only by decoding it, and decoding stops as soon as the limit is passed.
"""

from __future__ import annotations

import contextlib
import io
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .layout import atomic_writer

SAMPLE_RATE = 16000

# A WAV's RIFF header holds its size in 32 bits: the chunk size (36 + the data's bytes) must stay below 4 GiB.
MAX_WAV_FRAMES = (0xFFFFFFFF - 36) // 2  # 16-bit mono: 37.28 h at 16 kHz


class DecodeError(Exception):
    """The input could not be decoded into audio samples."""


class TooLong(DecodeError):
    """The input decodes to more audio than its limit allows (decoding stopped at the limit)."""

    def __init__(self, message: str, limit_s: float) -> None:
        super().__init__(message)
        self.limit_s = limit_s


@dataclass(frozen=True)
class Limit:
    """The most 16 kHz frames a decode may produce, and what to tell the sender of a longer input."""

    frames: int
    advice: str = ""

    @property
    def seconds(self) -> float:
        return self.frames / SAMPLE_RATE

    def exceeded(self, name: str, stated_s: float | None = None) -> TooLong:
        said = "lasts" if stated_s is None else f"states that it lasts {_span(stated_s)},"
        return TooLong(f"{name} {said} more than the {_span(self.seconds)}{self.advice}", self.seconds)


# The normalised WAV of one file: the most a WAV can hold.
WAV_LIMIT = Limit(
    MAX_WAV_FRAMES,
    " one file may last (its 16 kHz 16-bit WAV can hold no more than 4 GiB); split the recording into parts"
    " shorter than that and send each (for example: ffmpeg -i INPUT -f segment -segment_time 36000"
    " -c copy part%03d.EXT)",
)


def normalize(src: Path, dest_wav: Path, limit: Limit = WAV_LIMIT) -> float:
    """Decode `src` into 16 kHz mono 16-bit WAV at `dest_wav`, atomically; return the duration in seconds.
    An input longer than `limit` is a `TooLong`, and no WAV is left."""
    src = Path(src)
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise DecodeError(f"cannot read {src.name}: {exc.strerror or exc}") from None
    if size == 0:
        raise DecodeError(f"{src.name} is empty (0 bytes)")
    frames = 0
    with (
        _audio_stream(str(src), src.name, limit) as (container, stream),
        atomic_writer(dest_wav, "wb") as fh,
        wave.open(fh, "wb") as out,
    ):
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        for pcm in _pcm16(container, stream, src.name, limit):
            out.writeframesraw(pcm.tobytes())
            frames += pcm.shape[0]
    return frames / SAMPLE_RATE


def decode_clip(data: bytes, name: str, max_s: float) -> np.ndarray:
    """`data` (audio in any format ffmpeg reads) as 16 kHz mono float32 in [-1, 1]; a clip longer than
    `max_s` is a `TooLong`, known without decoding all of it."""
    if not data:
        raise DecodeError(f"{name} is empty (0 bytes)")
    limit = Limit(int(max_s * SAMPLE_RATE))
    with _audio_stream(io.BytesIO(data), name, limit) as (container, stream):
        parts = list(_pcm16(container, stream, name, limit))
    return np.concatenate(parts).astype(np.float32) / 32768.0


@contextlib.contextmanager
def _audio_stream(source: Any, name: str, limit: Limit) -> Iterator[tuple[Any, Any]]:
    """The container and first audio stream of `source` (a path or a file object), closed after; one whose
    header states a length over `limit` is refused before anything is decoded."""
    import av  # PyAV: FFmpeg's decoders in-process, so any format ffmpeg reads works here

    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"{name} is not a readable audio or video file ({_why(exc)})") from None
    try:
        if not container.streams.audio:
            raise DecodeError(f"{name} has no audio stream")
        stream = container.streams.audio[0]
        stated = _stated_s(container, stream)
        if stated is not None and stated > limit.seconds:
            raise limit.exceeded(name, stated)
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


# Containers whose headers (or index) give the length in samples. Elsewhere FFmpeg may estimate it from the
# first frames' bit rate: a VBR MP3 without a Xing header that opens with silence is stated twice as long.
_EXACT_LENGTH = frozenset({"flac", "wav", "w64", "aiff", "caf", "ogg", "mov", "mp4", "matroska", "webm"})


def _stated_s(container: Any, stream: Any) -> float | None:
    """The length the file's header states, in seconds; None where it states none, or only an estimate.
    Only a hint: the decoded length is what counts, and `_pcm16` counts it."""
    if _EXACT_LENGTH.isdisjoint(container.format.name.split(",")):
        return None
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _pcm16(container: Any, stream: Any, name: str, limit: Limit) -> Iterator[np.ndarray]:
    """The stream's audio as 16 kHz mono int16 arrays, in order; a `TooLong` (before the array that would
    pass it) once it lasts longer than `limit`."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    frames = 0

    def counted(pcm: np.ndarray) -> np.ndarray:
        nonlocal frames
        frames += pcm.shape[0]
        if frames > limit.frames:
            raise limit.exceeded(name)
        return pcm

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                for pcm in _arrays(resampler.resample(frame)):
                    yield counted(pcm)
        for pcm in _arrays(resampler.resample(None)):
            yield counted(pcm)
    except av.FFmpegError as exc:
        if frames == 0:
            raise DecodeError(f"{name} could not be decoded ({_why(exc)})") from None
        raise DecodeError(
            f"{name} is damaged: decoding failed after {frames / SAMPLE_RATE:.1f} s ({_why(exc)})"
        ) from None
    if frames == 0:
        raise DecodeError(f"{name} contains no audio samples")


def _arrays(frames: list) -> Iterator[np.ndarray]:
    for frame in frames:
        yield np.ascontiguousarray(frame.to_ndarray().reshape(-1), dtype="<i2")


def _span(seconds: float) -> str:
    """A length as people read it: 39.0 h, 12.5 min, 10 s."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:g} s"


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip()
    return text or type(exc).__name__


class WavReader:
    """16 kHz mono PCM16 WAV read window by window with plain file reads.

    Plain reads rather than a memory map: touched pages of a map count as resident memory, so a map would
    make a two-hour file look (and, under a container's memory limit, act) like a two-hour buffer.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with wave.open(str(self.path), "rb") as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, SAMPLE_RATE):
                raise DecodeError(f"{self.path.name} is not 16 kHz mono PCM16")
            self.frames = w.getnframes()
        self._offset = self.path.stat().st_size - self.frames * 2  # the data chunk is the file's last

    @property
    def duration(self) -> float:
        return self.frames / SAMPLE_RATE

    def pcm(self, first: int = 0, last: int | None = None) -> np.ndarray:
        """Samples [first, last) as int16."""
        last = self.frames if last is None else min(self.frames, last)
        first = max(0, min(first, last))
        with open(self.path, "rb") as fh:
            fh.seek(self._offset + 2 * first)
            return np.fromfile(fh, dtype="<i2", count=last - first)

    def read(self, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
        """Seconds [start_s, end_s) as float32 in [-1, 1]."""
        first = int(round(start_s * SAMPLE_RATE))
        last = None if end_s is None else int(round(end_s * SAMPLE_RATE))
        samples = self.pcm(first, last).astype(np.float32)
        samples /= 32768.0  # in place: a 600 s window is 38 MB, a second copy as much again
        return samples

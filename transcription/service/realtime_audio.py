"""Live audio in: base64 PCM16 at 24 kHz checked and decoded, then resampled to the model's 16 kHz as it
streams, with exactly the samples a whole-signal resampling would give (so a turn decodes as the same audio
would offline)."""

from __future__ import annotations

import base64
import binascii

import numpy as np

from transcription.audio import SAMPLE_RATE as MODEL_RATE  # noqa: F401 - declared there; for the live modules

from .realtime_protocol import SAMPLE_RATE, ClientError

_UP, _DOWN = 2, 3  # 24 kHz -> 16 kHz
# Input samples of context kept on each side of a resampled block: more than resample_poly's filter half
# length (10 taps per phase at the 48 kHz intermediate rate, 15 input samples), a multiple of _DOWN.
_PAD = 30


def decode_pcm16(data: object) -> np.ndarray:
    """The `audio` of an `input_audio_buffer.append`: base64 of little-endian 16-bit mono samples."""
    if not isinstance(data, str):
        raise ClientError("invalid_value", "audio must be a base64 string of PCM16 samples", "audio")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("invalid_audio", "audio is not valid base64", "audio") from None
    if len(raw) % 2:
        raise ClientError(
            "invalid_audio",
            f"audio has {len(raw)} bytes, an odd count: pcm16 samples are 2 bytes each (16-bit mono, 24 kHz)",
            "audio",
        )
    return np.frombuffer(raw, dtype="<i2")


def seconds(pcm: np.ndarray) -> float:
    return pcm.shape[0] / SAMPLE_RATE


class Resampler:
    """24 kHz int16 in, 16 kHz float32 out, block by block.

    Each block is resampled with `_PAD` input samples of context on both sides and only its interior is
    kept; the last `_PAD` samples wait for the next block (or `flush`). Blocks start at multiples of 3
    input samples, so every output sample lands where the whole-signal resampling puts it.
    """

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)  # input not yet resampled, with left context
        self._context = 0  # how many leading samples of _pending are context only

    def push(self, pcm: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._pending, pcm.astype(np.float32) / 32768.0])
        stop = (buf.shape[0] - _PAD - self._context) // _DOWN * _DOWN + self._context
        if stop <= self._context:
            self._pending = buf
            return np.zeros(0, dtype=np.float32)
        out = self._block(buf[: stop + _PAD], self._context, stop)
        keep = max(0, stop - _PAD)
        self._pending = buf[keep:]
        self._context = stop - keep
        return out

    def flush(self) -> np.ndarray:
        """The held-back tail (end of stream): resampled as the end of the whole signal would be."""
        buf = self._pending
        if buf.shape[0] <= self._context:
            return np.zeros(0, dtype=np.float32)
        out = self._block(buf, self._context, buf.shape[0])
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = 0
        return out

    @staticmethod
    def _block(buf: np.ndarray, first: int, stop: int) -> np.ndarray:
        from scipy.signal import resample_poly  # scipy comes with the enrich extra, as for Stage 2

        y = resample_poly(buf, _UP, _DOWN).astype(np.float32)
        skip = first * _UP // _DOWN
        count = -(-(stop - first) * _UP // _DOWN)  # ceil: outputs at input positions first, first+1.5, ...
        return y[skip : skip + count]

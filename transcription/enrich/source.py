"""One view of Stage 2's input audio: a decoded array (tests, the service) or the normalised WAV on disk.

Stage 2 reads only the windows it analyses, so a two-hour file never has to be decoded into memory whole.
Both forms give the same float32 samples for the same sample range.
"""

from __future__ import annotations

import numpy as np

from transcription.audio import SAMPLE_RATE, WavReader


class AudioSource:
    """Mono float32 samples read by sample range (``samples``) or by seconds (``read``)."""

    def __init__(self, audio: np.ndarray | WavReader, sample_rate: int = SAMPLE_RATE) -> None:
        self.sample_rate = sample_rate
        self._reader: WavReader | None = None
        self._array: np.ndarray | None = None
        if isinstance(audio, WavReader):
            if sample_rate != SAMPLE_RATE:
                raise ValueError(f"a WavReader holds {SAMPLE_RATE} Hz audio, not {sample_rate} Hz")
            self._reader = audio
            self.n_samples = int(audio.frames)
        else:
            array = np.asarray(audio)
            if array.ndim != 1:
                raise ValueError(f"audio must be mono (1-D), got shape {array.shape}")
            self._array = array.astype(np.float32, copy=False)
            self.n_samples = int(array.size)

    @property
    def duration(self) -> float:
        return self.n_samples / self.sample_rate

    def samples(self, first: int, last: int) -> np.ndarray:
        """Samples [first, last), clipped to the signal, as float32."""
        last = max(0, min(int(last), self.n_samples))
        first = max(0, min(int(first), last))
        if self._reader is not None:
            # The same conversion as WavReader.read, so a window equals the slice of a whole-file read.
            return self._reader.pcm(first, last).astype(np.float32) / 32768.0
        assert self._array is not None
        return self._array[first:last]

    def read(self, start_s: float, end_s: float) -> np.ndarray:
        """Seconds [start_s, end_s) as float32."""
        return self.samples(int(round(start_s * self.sample_rate)), int(round(end_s * self.sample_rate)))


AudioInput = np.ndarray | WavReader | AudioSource


def as_source(audio: AudioInput, sample_rate: int = SAMPLE_RATE) -> AudioSource:
    return audio if isinstance(audio, AudioSource) else AudioSource(audio, sample_rate)

"""Where someone speaks: Silero VAD (the copy faster-whisper ships, through fw_internals) over the WAV, one
block at a time."""

from __future__ import annotations

import numpy as np

from transcription.audio import SAMPLE_RATE, WavReader

BLOCK_S = 120.0  # VAD runs on 2-minute blocks: memory stays flat (and small) on a 2-hour recording
MIN_SPEECH_S = 0.25
THRESHOLD = 0.5  # Silero speech probability (0.35 was tried: docs/speakers.md)


def speech_regions(audio: WavReader | np.ndarray) -> list[tuple[float, float]]:
    """Speech as (start, end) seconds, sorted, merged across block edges."""
    from transcription import fw_internals

    total = audio.frames if isinstance(audio, WavReader) else int(audio.shape[0])
    regions: list[tuple[float, float]] = []
    block = int(BLOCK_S * SAMPLE_RATE)
    for first in range(0, total, block):
        last = min(total, first + block)
        chunk = (
            audio.read(first / SAMPLE_RATE, last / SAMPLE_RATE)
            if isinstance(audio, WavReader)
            else np.asarray(audio[first:last], dtype=np.float32)
        )
        for ts in fw_internals.diarizer_speech(chunk, THRESHOLD, 300, 100, 200):
            start, end = (first + ts["start"]) / SAMPLE_RATE, (first + ts["end"]) / SAMPLE_RATE
            if regions and start - regions[-1][1] < 0.05:
                regions[-1] = (regions[-1][0], end)
            else:
                regions.append((start, end))
    return [(s, e) for s, e in regions if e - s >= MIN_SPEECH_S]

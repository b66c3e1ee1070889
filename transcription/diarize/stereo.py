"""Calls recorded one party per channel: a speaker per channel, found from the channels' loudness.

A two-channel source counts as one party per channel when, over the frames where anyone speaks, mostly one
channel alone does (MIN_ALONE_SHARE) and each channel speaks for a real share of the time. An ordinary stereo
recording (music, a room microphone pair) has both channels alike and is left to the embedded diarizer. The
channels are decoded from the source in a stream, and only a level per 20 ms frame is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transcription.audio import SAMPLE_RATE

FRAME_S = 0.02
FLOOR_MARGIN_DB = 15.0
LEAD_DB = 10.0
MIN_ALONE_SHARE = 0.7  # of the frames where anyone speaks, the share where only one channel does
MIN_LEAD_SHARE = 0.1  # each channel speaks in at least this share of them
MIN_TURN_S = 0.3
MAX_GAP_S = 0.4


def channel_levels(source: Path) -> np.ndarray | None:
    """Per-frame levels in dB, shape (2, frames), for a two-channel source; None for any other."""
    import av

    try:
        container = av.open(str(source), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError):
        return None
    try:
        if not container.streams.audio or container.streams.audio[0].channels != 2:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
        frame = int(SAMPLE_RATE * FRAME_S)
        carry = np.zeros((2, 0), dtype=np.float32)
        levels: list[np.ndarray] = []
        for packet_frame in container.decode(stream):
            for out in resampler.resample(packet_frame):
                carry = np.concatenate([carry, out.to_ndarray().astype(np.float32)], axis=1)
                n = carry.shape[1] // frame
                if n:
                    block = carry[:, : n * frame].reshape(2, n, frame)
                    levels.append(10 * np.log10(np.mean(block**2, axis=2) + 1e-10))
                    carry = carry[:, n * frame :]
    except (av.FFmpegError, ValueError):
        return None
    finally:
        container.close()
    return np.concatenate(levels, axis=1) if levels else None


def per_channel_turns(levels: np.ndarray) -> list[tuple[int, float, float]] | None:
    """(channel, start, end) turns when the channels hold one party each; None when they do not."""
    # A channel speaks in a frame when it is well above its own noise floor and not far below the other
    # channel (the other party's voice leaking in, or a room heard by both microphones, stays below).
    floors = np.maximum(np.percentile(levels, 10, axis=1), -90.0)
    above = levels > (floors + FLOOR_MARGIN_DB)[:, None]
    active = above & (levels > levels[::-1] - LEAD_DB)
    anyone = active.any(axis=0)
    if anyone.sum() * FRAME_S < 1.0:
        return None
    alone = (active[0] ^ active[1])[anyone].mean()
    shares = active[:, anyone].mean(axis=1)
    if alone < MIN_ALONE_SHARE or shares.min() < MIN_LEAD_SHARE:
        return None
    turns = [(ch, s, e) for ch in (0, 1) for s, e in _runs(active[ch])]
    return sorted(turns, key=lambda t: (t[1], t[2]))


def _runs(active: np.ndarray) -> list[tuple[float, float]]:
    runs: list[tuple[float, float]] = []
    start = None
    for i, on in enumerate(np.append(active, False)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            s, e = start * FRAME_S, i * FRAME_S
            if runs and s - runs[-1][1] <= MAX_GAP_S:
                runs[-1] = (runs[-1][0], e)
            else:
                runs.append((s, e))
            start = None
    return [(s, e) for s, e in runs if e - s >= MIN_TURN_S]

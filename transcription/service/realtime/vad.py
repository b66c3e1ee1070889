"""Speech probabilities as audio streams in: faster-whisper's Silero VAD, its state carried block to block.

`SileroVADModel.__call__` starts from a fresh state on every call, and restarting it mid-stream changes its
decisions (measured on jfk.flac: 13 to 36 of 343 frames flipped with 0.1 to 1 s of re-fed context). So the
model's ONNX session is driven here directly, as `__call__` drives it, with its LSTM state (`h`, `c`) and
the 64-sample context kept between blocks: the probabilities equal those of one call on the whole signal
(checked in tests/test_realtime.py). The session comes from faster-whisper's internals through
fw_internals.silero_session, which checks its inputs.
"""

from __future__ import annotations

import numpy as np

from transcription import fw_internals as fw

FRAME = 512  # samples per probability at 16 kHz (32 ms)
_CONTEXT = 64
_STATE_SHAPE = (1, 1, 128)


class StreamingVad:
    """Speech probability of each 512-sample frame of a 16 kHz stream, fed in blocks of any size."""

    def __init__(self) -> None:
        self._session = fw.silero_session()
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of the whole frames completed by `samples` (a partial frame waits for more)."""
        buf = np.concatenate([self._rest, samples.astype(np.float32, copy=False)])
        n = buf.shape[0] // FRAME
        self._rest = buf[n * FRAME :]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = buf[: n * FRAME].reshape(n, FRAME)
        # Each frame is preceded by the last 64 samples of the one before, as in SileroVADModel.__call__.
        before = np.concatenate([self._context, frames[:-1, -_CONTEXT:]], axis=0)
        out, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([before, frames], axis=1), "h": self._h, "c": self._c}
        )
        self._context = frames[-1:, -_CONTEXT:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)

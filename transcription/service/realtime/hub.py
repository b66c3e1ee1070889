"""The service's live sessions: their places (SLOWER_WHISPER_REALTIME_MAX_SESSIONS), the decoder they share
(started once the model is loaded), the threads that run their audio processing (resampling, turn
detection: their own, so that no request's work, which fills asyncio's default threads, ever delays a live
session), and their end when the server stops: each open session is told, given
time to send its committed turns, closed with a reason, and then the decoder's threads are joined, so no
thread is left inside the model when the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from transcription import hardware
from transcription.config import Settings

from ..access import shutting_down
from ..errors import ApiError
from ..metrics import Metrics
from .decode import LiveDecoder

if TYPE_CHECKING:
    from transcription.asr import Engine
    from transcription.packing import SharedPacker

log = logging.getLogger(__name__)


class LiveHub:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.open = 0
        self.decoder: LiveDecoder | None = None
        self.executor = ThreadPoolExecutor(
            hardware.live_audio_threads(settings.realtime_max_sessions), thread_name_prefix="live-audio"
        )
        self.stopping = asyncio.Event()  # set once: every session ends, none opens
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    def start(self, engine: Engine, packer: SharedPacker | None) -> None:
        """The model is ready: start the decode threads (sized by hardware.live_decode_threads)."""
        threads = hardware.live_decode_threads(
            packer is not None, self.settings.realtime_max_sessions, engine.workers
        )
        self.decoder = LiveDecoder(engine, packer, self.settings, threads)

    def admit(self) -> None:
        """A place for one more session, or 503 (stopping) / 429 (every place taken)."""
        if self.stopping.is_set():
            raise shutting_down()
        limit = self.settings.realtime_max_sessions
        if self.open >= limit:
            raise ApiError(
                429, f"all {limit} live sessions are in use; retry later", "too_many_sessions", retry_after=5
            )
        self.open += 1
        self._all_closed.clear()
        self.metrics.realtime_sessions.set(self.open)

    def closed(self) -> None:
        self.open -= 1
        self.metrics.realtime_sessions.set(self.open)
        if self.open == 0:
            self._all_closed.set()

    @property
    def decoding(self) -> bool:
        """Whether a decode thread is still alive (inside the model, after `stop` gave up on it)."""
        return self.decoder is not None and self.decoder.alive

    async def stop(self, deadline: float) -> bool:
        """End every session and join the decode threads by `deadline` (monotonic). False when a thread is
        still inside the model then (the caller must not wait for it at exit)."""
        self.stopping.set()
        try:
            await asyncio.wait_for(self._all_closed.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("%d live session(s) still open at the shutdown deadline", self.open)
        self.executor.shutdown(wait=False, cancel_futures=True)  # each task is one short chunk of audio
        if self.decoder is None:
            return True
        joined = await asyncio.to_thread(self.decoder.close, max(0.0, deadline - time.monotonic()))
        if not joined:
            log.warning("a live decode is still running at the shutdown deadline")
        return joined

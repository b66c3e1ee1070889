"""`Service`: the state one app's routes, job runner and start-up share, and how a route reaches it."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request

from transcription.config import Settings, english_only
from transcription.layout import Layout

from .jobs.runner import JobRunner
from .jobs.store import JobStore
from .metrics import Metrics
from .scheduler import Scheduler
from .uploads import UploadSpace

if TYPE_CHECKING:  # both load faster-whisper; the service imports them only once the model loads
    from transcription.asr import Engine
    from transcription.packing import SharedPacker

GRACE_S = 25.0  # SIGTERM to exit, all work included (Kubernetes waits 30 s by default before SIGKILL)


@dataclass
class Service:
    """Everything the routes share; one per app."""

    settings: Settings
    layout: Layout
    scheduler: Scheduler
    store: JobStore
    runner: JobRunner
    space: UploadSpace
    metrics: Metrics
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    engine: Engine | None = None
    packer: SharedPacker | None = None  # in throughput mode on a GPU (or with a batch size)
    load_error: str | None = None
    loaded_at: int = 0
    shutdown_deadline: float | None = None  # monotonic; set when a stop signal arrives
    on_fatal: Callable[[int], None] | None = None
    work_seconds: float = 5.0  # moving average of one transcription's run time, for Retry-After
    exit_code: int = 0
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def uploads(self) -> Path:
        return self.space.folder

    @property
    def max_bytes(self) -> int:
        return self.settings.max_upload_mb * 1024 * 1024

    @property
    def multilingual(self) -> bool:
        """Whether the model knows languages other than English: the loaded model says; before it has
        loaded (a job accepted early), its name does."""
        if self.engine is not None:
            return self.engine.multilingual
        return not english_only(self.settings.model)

    def begin_shutdown(self) -> None:
        """On the stop signal: readiness turns 503, the job grace clock starts, nothing new starts."""
        if self.shutdown_deadline is None:
            self.shutdown_deadline = time.monotonic() + GRACE_S
        self.scheduler.close()

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free."""
        waits = (self.scheduler.waiting + self.runner.places + 1) / self.scheduler.workers
        return max(1, min(120, math.ceil(self.work_seconds * waits)))


async def get_service(request: Request) -> Service:
    """The route dependency: the app's one `Service` (async, so FastAPI calls it without a thread hop)."""
    service: Service = request.app.state.service
    return service

"""Prometheus metrics: one registry per app, an ASGI middleware for request counts and latency, and gauges
read at scrape time (queue depth, jobs by state, GPU memory through NVML)."""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


PREFIX = "slower_whisper_"  # every metric's name starts so


class Metrics:
    """The service's metrics, each declared once: `_counter`, `_gauge` and `_histogram` add the prefix and
    register it here."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = self._counter(
            "http_requests", "HTTP requests by route and status", labels=("method", "route", "status")
        )
        self.latency = self._histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            LATENCY_BUCKETS,
            labels=("method", "route"),
        )
        self.audio_seconds = self._counter("audio_seconds_processed", "Seconds of audio transcribed")
        self.transcriptions = self._counter(
            "transcriptions", "Transcriptions by outcome", labels=("outcome",)
        )
        # The loss detector: stretches decoded again, and speech that still has no text (each a warning).
        self.speech_retried = self._counter("speech_retried", "Lost or looping stretches decoded again")
        self.speech_without_text = self._counter(
            "speech_without_text", "Stretches of speech left without text"
        )
        self.speech_without_text_seconds = self._counter(
            "speech_without_text_seconds", "Seconds of speech left without text"
        )
        self.queue_depth = self._gauge("queue_depth", "Work waiting for a worker")
        self.running = self._gauge("inference_running", "Work running in a worker")
        self.model_load = self._gauge("model_load_seconds", "Time taken to load the model at start-up")
        self.ready = self._gauge("ready", "1 once the model is loaded")
        # Packed inference (throughput mode): how full the batches are and how many requests they mix.
        self.batch_chunks = self._histogram(
            "batch_chunks", "Speech chunks per packed inference batch", (1, 2, 4, 8, 16, 32, 64)
        )
        self.batch_requests = self._histogram(
            "batch_requests",
            "Distinct requests or jobs sharing one packed inference batch",
            (1, 2, 4, 8, 16, 32),
        )
        self._add_realtime()

    def _add_realtime(self) -> None:
        """Live sessions on /v1/realtime."""
        self.realtime_sessions = self._gauge("realtime_sessions", "Live transcription sessions open")
        self.realtime_session_ends = self._counter(
            "realtime_sessions_ended",
            "Live sessions ended, by reason (disconnected, session_idle_timeout, session_expired, ...)",
            labels=("reason",),
        )
        self.realtime_refused = self._counter(
            "realtime_sessions_refused",
            "Live session requests refused before the session started, by reason",
            labels=("reason",),
        )
        self.realtime_turns = self._counter("realtime_turns", "Live turns transcribed (completed events)")
        self.realtime_turn_seconds = self._histogram(
            "realtime_turn_completion_seconds",
            "From a live turn's commit to its completed event",
            (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
        )
        self.realtime_partials = self._counter(
            "realtime_partials", "Partial-text deltas sent while people spoke"
        )
        self.realtime_partial_revisions = self._counter(
            "realtime_partial_revisions",
            "Live turns whose final text changed words already shown as partial text",
        )
        self.realtime_errors = self._counter(
            "realtime_errors", "Error events sent on live sessions, by code", labels=("code",)
        )
        self.realtime_audio_seconds = self._counter(
            "realtime_audio_seconds", "Seconds of live audio received"
        )

    def _counter(self, name: str, doc: str, *, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(PREFIX + name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(PREFIX + name, doc, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, buckets: tuple[float, ...], *, labels: tuple[str, ...] = ()
    ) -> Histogram:
        return Histogram(PREFIX + name, doc, labels, buckets=buckets, registry=self.registry)

    def observe_batch(self, chunks: int, requests: int) -> None:
        self.batch_chunks.observe(chunks)
        self.batch_requests.observe(requests)

    def bind(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.running.set_function(running)

    def add_jobs(self, counts: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_JobsCollector(counts))

    def add_gpu(self) -> None:
        try:
            self.registry.register(_NvmlCollector())
        except OSError as exc:
            log.warning("GPU memory metrics unavailable: %s", exc)


class _JobsCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self):  # type: ignore[override]
        family = GaugeMetricFamily(PREFIX + "jobs", "Jobs on disk by state", labels=["state"])
        for state, n in sorted(self._counts().items()):
            family.add_metric([state], n)
        yield family


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class _NvmlCollector(Collector):
    """Device-wide GPU memory through NVML (libnvidia-ml ships with the driver): unlike asking a CUDA
    library, it creates no CUDA context and counts CTranslate2's allocations as well as torch's."""

    def __init__(self) -> None:
        self._nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if self._nvml.nvmlInit_v2() != 0:
            raise OSError("nvmlInit failed")

    def collect(self):  # type: ignore[override]
        used = GaugeMetricFamily(PREFIX + "gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily(PREFIX + "gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        count = ctypes.c_uint(0)
        if self._nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0:
            for i in range(count.value):
                handle = ctypes.c_void_p()
                mem = _NvmlMemory()
                if self._nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                    continue
                if self._nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) != 0:
                    continue
                used.add_metric([str(i)], mem.used)
                total.add_metric([str(i)], mem.total)
        yield used
        yield total


class MetricsMiddleware:
    """Counts every request by route template (bounded label values) and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.latency.labels(method, label).observe(time.perf_counter() - start)
            self.metrics.requests.labels(method, label, str(status["code"])).inc()

"""Running jobs when several server replicas share one root.

Every replica scans the shared jobs folder every few seconds (and at once when it accepts a job or a worker
frees up) and claims the oldest queued jobs it has a free worker for. Claiming a job means taking its lease
(`transcription.layout.Lease`, an O_EXCL file under ``jobs/.leases/`` renewed by a heartbeat): only the
lease holder writes ``running``, ``succeeded``/``failed``, the callback outcome or a re-queue, and only it
sends the callback, so two replicas never run the same job and no status transition is lost to a race.

A job whose holder died keeps status ``running`` until its lease goes stale (expired, or its holder is a
dead process on the same host); the next replica to scan takes the lease and queues the job again (or fails
it with code ``interrupted`` after MAX_ATTEMPTS starts). Claims happen only when a worker is free, so jobs
wait on disk, not in one replica's memory, and an idle replica picks up work another replica accepted.

DELETE from any replica: a job nobody holds is removed at once (under its lease); a job held elsewhere is
marked ``deleted`` on disk, disappears from the API at once, and its holder removes it (discarding any
result, sending no callback) when it lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transcription.layout import OWNER_HOST, Lease

from ..request import TranscriptionRequest
from ..scheduler import Scheduler, ShuttingDown, Ticket
from . import callbacks
from .store import FINAL, JobStore, _now

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
CALLBACK_TIMEOUT_S = 10.0
SCAN_INTERVAL_S = 2.0  # how often an idle replica looks for work other replicas accepted or left behind
MIN_SCAN_GAP_S = 0.2  # kicks closer together than this share one scan
WORKER = f"{OWNER_HOST}:{os.getpid()}"  # recorded in a running job: which replica runs it

# work(input_path, wav_path, file_label, request) -> transcript document; runs in a worker thread.
Work = Callable[[Path, Path, str, TranscriptionRequest], dict[str, Any]]
# describe(exception) -> (message, code) for a failed job's record.
Describe = Callable[[BaseException], tuple[str, str]]


class _Held:
    """A job this process holds the lease of."""

    __slots__ = ("lease", "ticket", "task")

    def __init__(self, lease: Lease, ticket: Ticket) -> None:
        self.lease = lease
        self.ticket = ticket
        self.task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class JobRunner:
    """This replica's part in running the root's jobs: what it is given (the store, the scheduler whose
    places it shares, how to run and describe a job, whether the model is ready), then its own state."""

    store: JobStore
    scheduler: Scheduler
    work: Work
    describe: Describe
    ready: Callable[[], bool]
    on_scan: Callable[[], None] | None = None  # extra periodic housekeeping (stale upload folders)
    # SLOWER_WHISPER_CALLBACK_ALLOW_INTERNAL: callbacks may go to loopback/private addresses.
    callback_allow_internal: bool = False
    _held: dict[str, _Held] = field(default_factory=dict, init=False)
    # accepted here, not yet claimed by anyone -> when accepted
    _pending: dict[str, float] = field(default_factory=dict, init=False)
    _uploading: int = field(default=0, init=False)
    # a holder's final write vs. the shutdown re-queue
    _write_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _kick: asyncio.Event | None = field(default=None, init=False)
    _loop_task: asyncio.Task[None] | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    # ---------------------------------------------------------------- admission

    @property
    def places(self) -> int:
        """Places in this replica's bounded queue taken by jobs: uploads in progress and jobs accepted here
        that no replica has claimed yet."""
        return self._uploading + len(self._pending)

    def reserve(self) -> None:
        self._uploading += 1

    def unreserve(self) -> None:
        self._uploading -= 1

    def accepted(self, job_id: str) -> None:
        self._pending[job_id] = time.monotonic()
        self.kick()

    # ---------------------------------------------------------------- the loop

    def start(self) -> None:
        self.store.ensure()
        self._kick = asyncio.Event()
        self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="job-scan")

    def kick(self) -> None:
        """Scan now rather than at the next interval."""
        if self._kick is not None:
            self._kick.set()

    def worker_freed(self) -> None:
        """A worker may be free: scan now if the last scan saw queued jobs (others wait for the interval)."""
        if self._pending or self.store.counts()["queued"]:
            self.kick()

    async def _loop(self) -> None:
        assert self._kick is not None
        while not self._closed:
            try:
                await self._tick()
            except Exception:  # noqa: BLE001 - a failed scan (volume hiccup) must not stop the loop
                log.exception("scanning the jobs folder failed")
            await asyncio.sleep(MIN_SCAN_GAP_S)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kick.wait(), SCAN_INTERVAL_S)
            self._kick.clear()

    async def _tick(self) -> None:
        started = time.monotonic()
        snap = await asyncio.to_thread(self.store.scan)
        if self.on_scan is not None:
            await asyncio.to_thread(self.on_scan)
        queued = {r["id"] for r in snap.records if r["status"] == "queued"}
        for job_id, at in list(self._pending.items()):
            if at < started and job_id not in queued:
                del self._pending[job_id]  # claimed by some replica, or deleted
        for job_id in snap.deleted:
            if job_id not in self._held:
                await asyncio.to_thread(self._reap, job_id)
        for record in snap.records:
            if self._closed or self.scheduler.closed:
                return
            job_id, status = record["id"], record["status"]
            if job_id in self._held or status not in ("queued", "running"):
                continue
            if status == "queued" and not self._can_start():
                continue  # running ones are still checked: a dead holder's job is recovered by anyone
            await self._claim(job_id)

    def _can_start(self) -> bool:
        return self.ready() and not self.scheduler.closed and self.scheduler.admitted < self.scheduler.workers

    async def _claim(self, job_id: str) -> None:
        lease = self.store.lease(job_id)
        if not await asyncio.to_thread(lease.acquire):
            return  # another replica holds it (running it, or deciding about it right now)
        try:
            record, interrupted = await asyncio.to_thread(self._recover, job_id, lease)
        except BaseException:
            await asyncio.to_thread(lease.release)
            raise
        if record is not None and record["status"] == "queued" and self._can_start():
            self._start(job_id, lease)
            return
        try:
            if interrupted and record is not None and record.get("callback_url"):
                await self._callback(record, lease)
        finally:
            await asyncio.to_thread(lease.release)

    def _recover(self, job_id: str, lease: Lease) -> tuple[dict[str, Any] | None, bool]:
        """In a thread, lease held: the record as it is now; a job left `running` by a holder that is gone is
        queued again, or failed after MAX_ATTEMPTS starts (second value True: this call failed it)."""
        if self.store.is_deleted(job_id):
            self.store.remove(job_id)
            return None, False
        record = self.store.read(job_id)
        if record is None or record["status"] != "running":
            return record, False
        attempts = int(record.get("attempts") or 0)
        if attempts >= MAX_ATTEMPTS:
            log.warning("job %s was interrupted %d times; failing it", job_id, attempts)
            record.update(
                status="failed",
                finished_at=_now(),
                error={
                    "message": f"interrupted {attempts} times while running; not retried",
                    "code": "interrupted",
                },
            )
            self.store.write(record)
            self.store.drop_inputs(job_id)
            return record, True
        log.warning("job %s: its runner %s is gone; queued again", job_id, record.get("worker"))
        record.update(status="queued", started_at=None)
        self.store.write(record)
        return record, False

    def _start(self, job_id: str, lease: Lease) -> None:
        held = _Held(lease, self.scheduler.admit(force=True))
        self._held[job_id] = held
        self._pending.pop(job_id, None)
        held.task = asyncio.get_running_loop().create_task(self._run(job_id, held), name=f"job-{job_id}")

    # ---------------------------------------------------------------- one job

    async def _run(self, job_id: str, held: _Held) -> None:
        try:
            try:
                final = await self.scheduler.run(held.ticket, lambda: self._execute(job_id, held.lease))
            except (ShuttingDown, asyncio.CancelledError):
                self.scheduler.release(held.ticket)
                return  # never started: still queued on disk for whoever claims it next
            except Exception:  # noqa: BLE001 - the record could not be written (volume full, gone)
                # Whatever state the record was left in, a later scan recovers it once the lease is free.
                log.exception("job %s: recording its state failed", job_id)
                return
            if final is not None and final.get("callback_url"):
                await self._callback(final, held.lease)
        finally:
            self._held.pop(job_id, None)
            try:
                await asyncio.to_thread(held.lease.release)
            except asyncio.CancelledError:
                held.lease.release()
            self.worker_freed()

    def _execute(self, job_id: str, lease: Lease) -> dict[str, Any] | None:
        """In a worker thread, lease held: run one job to a final state, recorded on disk whatever happens."""
        if not lease.held():
            log.warning("job %s: lease lost before it started; left to its new holder", job_id)
            return None
        if self.store.is_deleted(job_id):
            self.store.remove(job_id)
            return None
        record = self.store.read(job_id)
        if record is None or record["status"] != "queued":
            return None
        record.update(
            status="running",
            started_at=_now(),
            finished_at=None,
            attempts=int(record.get("attempts") or 0) + 1,
            worker=WORKER,
            error=None,
        )
        self.store.write(record)
        wav = self.store.dir(job_id) / "audio.wav"
        doc: dict[str, Any] | None = None
        error: dict[str, str] | None = None
        try:
            request = TranscriptionRequest.from_record(record["options"])
            doc = self.work(self.store.input_path(job_id), wav, record["file"], request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's recorded error
            message, code = self.describe(exc)
            log.warning("job %s failed: %s", job_id, message)
            error = {"message": message, "code": code}
        with self._write_lock:
            if not lease.held():
                log.warning("job %s: lease lost while it ran (stalled past its TTL?); result dropped", job_id)
                return None
            if self.store.is_deleted(job_id):
                log.info("job %s was deleted while it ran; result discarded", job_id)
                self.store.remove(job_id)
                return None
            if doc is not None:
                try:
                    self.store.write_result(job_id, doc)
                except OSError as exc:
                    doc, error = None, {"message": f"could not store the result: {exc}", "code": "storage"}
            if doc is not None:
                record.update(status="succeeded", duration=doc.get("duration"), error=None)
            else:
                record.update(status="failed", error=error)
            record["finished_at"] = _now()
            self.store.write(record)
            self.store.drop_inputs(job_id)
        return record

    async def _callback(self, record: dict[str, Any], lease: Lease) -> None:
        """POST the final record to the job's callback_url: best effort, with a timeout, never to an internal
        address unless allowed, no redirects; a coarse outcome is stored (see callbacks.py)."""
        job_id = record["id"]
        url = await asyncio.to_thread(self.store.callback_target, job_id, record)
        if not url:
            return
        outcome = await callbacks.deliver(
            url, record, allow_internal=self.callback_allow_internal, timeout=CALLBACK_TIMEOUT_S
        )
        log.info("job %s callback: %s", job_id, outcome["result"])
        await asyncio.to_thread(self._store_callback, dict(record, callback=outcome), lease)
        await asyncio.to_thread(self.store.forget_callback_target, job_id)

    def _store_callback(self, record: dict[str, Any], lease: Lease) -> None:
        if not lease.held():
            return
        if self.store.is_deleted(record["id"]):
            self.store.remove(record["id"])
            return
        with contextlib.suppress(FileNotFoundError):
            self.store.write(record)

    def _reap(self, job_id: str) -> None:
        """Remove a job marked deleted whose holder let go without removing it (died, or raced the mark)."""
        lease = self.store.lease(job_id)
        if lease.acquire():
            try:
                self.store.remove(job_id)
            finally:
                lease.release()

    # ---------------------------------------------------------------- DELETE

    async def delete(self, job_id: str) -> None:
        """Delete a job (the caller checked that it exists): at once when nobody holds it, else by marking it
        for its holder."""
        self._pending.pop(job_id, None)
        held = self._held.get(job_id)
        if held is not None and held.task is not None:
            if not held.ticket.started:
                held.task.cancel()  # claimed here but waiting for a worker: let go of it now
                await asyncio.wait({held.task}, timeout=5)
            else:
                record = await asyncio.to_thread(self.store.read, job_id)
                if record is not None and record["status"] in FINAL:
                    # Only its callback is left to do here: wait for it rather than leave the folder behind.
                    await asyncio.wait({held.task}, timeout=CALLBACK_TIMEOUT_S + 2)
        lease = self.store.lease(job_id)
        if await asyncio.to_thread(lease.acquire):
            try:
                await asyncio.to_thread(self.store.remove, job_id)
            finally:
                await asyncio.to_thread(lease.release)
        else:
            await asyncio.to_thread(self.store.mark_deleted, job_id)

    # ---------------------------------------------------------------- shutdown

    async def stop(self, timeout: float) -> None:
        """Stop claiming; jobs that have not started are let go (still queued on disk); running ones get
        `timeout` to finish and send their callbacks; any still running then are queued again."""
        self._closed = True
        self.kick()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        waiting = [h.task for h in self._held.values() if h.task is not None and not h.ticket.started]
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting, timeout=5)
        deadline = time.monotonic() + timeout
        finished = await self.scheduler.wait_idle(timeout)
        tasks = [h.task for h in self._held.values() if h.task is not None and not h.task.done()]
        if finished and tasks:  # callbacks still in flight
            await asyncio.wait(tasks, timeout=min(CALLBACK_TIMEOUT_S, max(deadline - time.monotonic(), 1.0)))
        for job_id, held in list(self._held.items()):
            if held.ticket.started and held.task is not None and not held.task.done():
                await asyncio.to_thread(self._requeue, job_id, held.lease)

    def _requeue(self, job_id: str, lease: Lease) -> None:
        with self._write_lock:
            record = self.store.read(job_id)
            if record is not None and record["status"] == "running" and lease.held():
                log.warning("job %s still running at shutdown; queued again for any replica", job_id)
                record.update(status="queued", started_at=None)
                with contextlib.suppress(FileNotFoundError):
                    self.store.write(record)
        lease.release()  # its thread may still finish, but without the lease it writes nothing

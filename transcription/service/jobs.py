"""Jobs: transcriptions accepted now and done in the background, recorded on disk under
``<root>/.slower-whisper/jobs/<id>/`` so that a restarted server resumes queued work and keeps results.

Each job folder holds ``job.json`` (the record, rewritten atomically on every change), the uploaded file
while the job waits, and ``result.json`` (the transcript document) once it succeeded. A job that was
running when the process died is queued again on start-up, up to MAX_ATTEMPTS starts in all, so one input
that crashes the process cannot crash it forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from transcription.layout import atomic_write_json

from .scheduler import Scheduler, ShuttingDown, Ticket

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed")
MAX_ATTEMPTS = 3
CALLBACK_TIMEOUT_S = 10.0
_ID = re.compile(r"^[0-9a-f]{32}$")
RECORD = "job.json"
RESULT = "result.json"
INPUT = "input"


def new_id() -> str:
    return uuid.uuid4().hex


def valid_id(job_id: str) -> bool:
    return bool(_ID.match(job_id))


class JobStore:
    """The job records: on disk for durability, mirrored in memory for listing and counting."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}

    def dir(self, job_id: str) -> Path:
        return self.folder / job_id

    def input_path(self, job_id: str) -> Path:
        return self.dir(job_id) / INPUT

    def load(self) -> list[dict[str, Any]]:
        """Read every record; return the jobs to resume (queued, or interrupted while running), oldest
        first."""
        self.folder.mkdir(parents=True, exist_ok=True)
        resume = []
        for path in sorted(self.folder.iterdir()):
            if not (path.is_dir() and valid_id(path.name)):
                continue
            try:
                record = json.loads((path / RECORD).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                # A folder without a readable record is an upload that never got accepted.
                log.warning("removing incomplete job folder %s", path)
                shutil.rmtree(path, ignore_errors=True)
                continue
            if record.get("status") == "running":
                if record.get("attempts", 0) >= MAX_ATTEMPTS:
                    record.update(
                        status="failed",
                        finished_at=_now(),
                        error={
                            "message": f"interrupted {record['attempts']} times while running; not retried",
                            "code": "interrupted",
                        },
                    )
                    self._drop_inputs(path.name)
                else:
                    record["status"] = "queued"
                atomic_write_json(path / RECORD, record)
            self._records[path.name] = record
            if record["status"] == "queued":
                resume.append(record)
        resume.sort(key=lambda r: (r.get("created_at", 0), r["id"]))
        return resume

    def reserve(self) -> str:
        job_id = new_id()
        self.dir(job_id).mkdir(parents=True)
        return job_id

    def create(self, job_id: str, filename: str, options: dict[str, Any], callback_url: str | None) -> dict:
        record = {
            "id": job_id,
            "object": "transcription.job",
            "status": "queued",
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
            "file": filename,
            "options": options,
            "callback_url": callback_url,
            "attempts": 0,
            "duration": None,
            "error": None,
        }
        with self.lock:
            atomic_write_json(self.dir(job_id) / RECORD, record)
            self._records[job_id] = record
        return dict(record)

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.lock:
            record = self._records.get(job_id)
            return dict(record) if record else None

    def list(self) -> list[dict[str, Any]]:
        with self.lock:
            records = [dict(r) for r in self._records.values()]
        return sorted(records, key=lambda r: (r.get("created_at", 0), r["id"]), reverse=True)

    def counts(self) -> dict[str, int]:
        with self.lock:
            found = Counter(r["status"] for r in self._records.values())
        return {state: found.get(state, 0) for state in STATES}

    def update(self, job_id: str, only_if: str | None = None, **changes: Any) -> dict[str, Any] | None:
        """Apply `changes` (when the job exists, and is in state `only_if` if given) and persist them."""
        with self.lock:
            record = self._records.get(job_id)
            if record is None or (only_if is not None and record["status"] != only_if):
                return None
            record.update(changes)
            atomic_write_json(self.dir(job_id) / RECORD, record)
            return dict(record)

    def delete(self, job_id: str) -> str | None:
        """Remove a job that is not running; returns the state it had (None when unknown)."""
        with self.lock:
            record = self._records.get(job_id)
            if record is None:
                return None
            if record["status"] == "running":
                return "running"
            del self._records[job_id]
            shutil.rmtree(self.dir(job_id), ignore_errors=True)
            return record["status"]

    def forget_new(self, job_id: str) -> None:
        """Remove the folder of a job whose upload failed before it was recorded."""
        shutil.rmtree(self.dir(job_id), ignore_errors=True)

    def write_result(self, job_id: str, doc: dict[str, Any]) -> None:
        atomic_write_json(self.dir(job_id) / RESULT, doc)

    def read_result(self, job_id: str) -> dict[str, Any]:
        return json.loads((self.dir(job_id) / RESULT).read_text(encoding="utf-8"))

    def _drop_inputs(self, job_id: str) -> None:
        for path in self.dir(job_id).iterdir():
            if path.name not in (RECORD, RESULT):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


# work(input_path, wav_path, file_label, options) -> transcript document; runs in a worker thread.
Work = Callable[[Path, Path, str, dict[str, Any]], dict[str, Any]]
# describe(exception) -> (message, code) for a failed job's record.
Describe = Callable[[BaseException], tuple[str, str]]


class JobRunner:
    """Feeds queued jobs through the shared Scheduler once the model is ready, then fires callbacks."""

    def __init__(
        self, store: JobStore, scheduler: Scheduler, work: Work, describe: Describe, ready: asyncio.Event
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.work = work
        self.describe = describe
        self.ready = ready
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._callbacks: set[asyncio.Task[None]] = set()

    def start(self, job_id: str, ticket: Ticket) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job_id, ticket), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    def cancel(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()

    async def _run(self, job_id: str, ticket: Ticket) -> None:
        try:
            await self.ready.wait()
            record = await self.scheduler.run(ticket, lambda: self._execute(job_id))
        except (ShuttingDown, asyncio.CancelledError):
            self.scheduler.release(ticket)
            return  # still queued on disk (or deleted): a restart picks it up
        if record is not None and record.get("callback_url"):
            task = asyncio.get_running_loop().create_task(self._callback(record))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    def _execute(self, job_id: str) -> dict[str, Any] | None:
        """In a worker thread: run one job to a final state, recorded on disk whatever happens."""
        current = self.store.get(job_id)
        if current is None:
            return None  # deleted while it waited
        record = self.store.update(
            job_id,
            only_if="queued",
            status="running",
            started_at=_now(),
            attempts=current.get("attempts", 0) + 1,
        )
        if record is None:
            return None
        folder = self.store.dir(job_id)
        wav = folder / "audio.wav"
        try:
            doc = self.work(self.store.input_path(job_id), wav, record["file"], record["options"])
            self.store.write_result(job_id, doc)
            final = self.store.update(
                job_id, status="succeeded", finished_at=_now(), duration=doc.get("duration"), error=None
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's recorded error
            message, code = self.describe(exc)
            log.warning("job %s failed: %s", job_id, message)
            final = self.store.update(
                job_id, status="failed", finished_at=_now(), error={"message": message, "code": code}
            )
        with self.store.lock:
            self.store._drop_inputs(job_id)
        return final

    async def _callback(self, record: dict[str, Any]) -> None:
        """POST the final record to the job's callback_url: best effort, with a timeout, logged."""
        url = record["callback_url"]
        outcome: dict[str, Any] = {"at": _now()}
        try:
            async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S, follow_redirects=False) as client:
                response = await client.post(url, json=record)
            outcome["status_code"] = response.status_code
            log.info("job %s callback to %s answered %s", record["id"], url, response.status_code)
        except httpx.HTTPError as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            log.warning("job %s callback to %s failed: %s", record["id"], url, outcome["error"])
        self.store.update(record["id"], callback=outcome)

    async def stop(self, timeout: float) -> None:
        """On shutdown: let running jobs finish within `timeout`, put back as queued those that did not."""
        # Jobs still waiting for the model are dropped from memory (they stay queued on disk); those waiting
        # for a worker were already refused by Scheduler.close(); running ones finish and fire callbacks.
        for job_id, task in list(self._tasks.items()):
            record = self.store.get(job_id)
            if record is None or record["status"] == "queued":
                task.cancel()
        finished = await self.scheduler.wait_idle(timeout)
        if self._callbacks:
            await asyncio.wait(self._callbacks, timeout=min(CALLBACK_TIMEOUT_S, max(timeout, 1.0)))
        if not finished:
            for record in self.store.list():
                if record["status"] == "running":
                    log.warning(
                        "job %s still running at shutdown; queued again for the next start", record["id"]
                    )
                    self.store.update(record["id"], only_if="running", status="queued", started_at=None)


def _now() -> float:
    return round(time.time(), 3)

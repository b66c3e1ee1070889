"""Job records on disk: ``<root>/.slower-whisper/jobs/<id>/``, shared by every server replica on the root.

Each job folder holds ``job.json`` (the record, rewritten atomically on every change), the uploaded file
while the job waits, ``result.json`` (the transcript document) once it succeeded, ``deleted`` once a
client deleted it while another process held it, and ``callback-url`` (mode 0600) while a callback whose
URL carries credentials (``https://user:secret@host/``) is still to be sent: the record itself, which the
API returns and the runner POSTs, only ever holds the URL with its userinfo redacted (``***@``). The
folder appears whole: the upload and its first record are written in the accepting process's upload space
and renamed into ``jobs/``.

The disk is the only source of truth: every read goes to the files, so any replica answers for any job.
Who may write a record after it was created is decided by the job's lease (``jobs/.leases/``): see
runner.py.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transcription.layout import Lease, atomic_write_bytes, atomic_write_json

from ..request import TranscriptionRequest
from .callbacks import has_userinfo, is_redacted, redact

log = logging.getLogger(__name__)

STATES = ("queued", "running", "succeeded", "failed")
FINAL = ("succeeded", "failed")
_ID = re.compile(r"^[0-9a-f]{32}$")
RECORD = "job.json"
RESULT = "result.json"
INPUT = "input"
DELETED = "deleted"
CALLBACK = "callback-url"  # the callback URL with its credentials, only when it has some
LEASES = ".leases"
# A folder without a record is a removal cut short (or a leftover of an older version); it is swept once it
# has been left alone this long, so a removal in progress elsewhere is never raced.
ORPHAN_AGE_S = 3600.0


def new_id() -> str:
    return uuid.uuid4().hex


def valid_id(job_id: str) -> bool:
    return bool(_ID.match(job_id))


@dataclass
class Snapshot:
    """One pass over the jobs folder."""

    records: list[dict[str, Any]] = field(default_factory=list)  # oldest first, deleted ones left out
    deleted: list[str] = field(default_factory=list)  # marked deleted, folder still there


class JobStore:
    """Reads and writes job folders. Holds no state of its own beyond a read cache keyed by file identity."""

    def __init__(self, folder: Path, lease_ttl: float) -> None:
        self.folder = folder
        self.leases = folder / LEASES
        self.lease_ttl = lease_ttl
        self._lock = threading.Lock()
        # id -> ((inode, mtime_ns, size), record): every rewrite is a rename, so a new inode = new content.
        self._cache: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
        self._counts: dict[str, int] = dict.fromkeys(STATES, 0)
        self._targets: dict[str, str] = {}  # id -> callback URL with credentials, from new_record to publish

    def dir(self, job_id: str) -> Path:
        return self.folder / job_id

    def input_path(self, job_id: str) -> Path:
        return self.dir(job_id) / INPUT

    def lease(self, job_id: str) -> Lease:
        return Lease(self.leases, job_id, self.lease_ttl)

    def ensure(self) -> None:
        self.leases.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- create

    def new_record(
        self, job_id: str, filename: str, request: TranscriptionRequest, callback_url: str | None
    ) -> dict:
        """A queued job's first record. A callback URL's credentials are kept apart until `publish`."""
        if has_userinfo(callback_url):
            self._targets[job_id] = str(callback_url)
        return {
            "id": job_id,
            "object": "transcription.job",
            "status": "queued",
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
            "file": filename,
            "options": request.to_record(),
            "callback_url": redact(callback_url),
            "attempts": 0,
            "worker": None,
            "duration": None,
            "error": None,
        }

    def publish(self, staging: Path, record: dict[str, Any]) -> None:
        """Write the first record beside the upload in `staging`, then move the whole folder into jobs/."""
        target = self._targets.pop(record["id"], None)
        if target is not None:
            _write_target(staging, target)
        atomic_write_json(staging / RECORD, _public(record))
        self.folder.mkdir(parents=True, exist_ok=True)
        os.rename(staging, self.dir(record["id"]))

    def callback_target(self, job_id: str, record: dict[str, Any]) -> str | None:
        """Where to send the job's callback: the URL with its credentials when it had some."""
        try:
            return (self.dir(job_id) / CALLBACK).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return record.get("callback_url")

    def forget_callback_target(self, job_id: str) -> None:
        """The callback was sent (or refused): its credentials are not kept any longer."""
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (self.dir(job_id) / CALLBACK).unlink()

    # ---------------------------------------------------------------- read

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The record as it is on disk now; None when unknown or deleted."""
        folder = self.dir(job_id)
        if (folder / DELETED).exists():
            return None
        try:
            return _public(json.loads((folder / RECORD).read_text(encoding="utf-8")))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_deleted(self, job_id: str) -> bool:
        return (self.dir(job_id) / DELETED).exists()

    def scan(self) -> Snapshot:
        """Every record in the folder, oldest first. Unchanged files are not read again."""
        snap = Snapshot()
        seen: set[str] = set()
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if not (valid_id(entry.name) and entry.is_dir()):
                continue
            job_id = entry.name
            folder = Path(entry.path)
            if (folder / DELETED).exists():
                snap.deleted.append(job_id)
                continue
            record = self._read_cached(job_id, folder)
            if record is None:
                self._sweep_orphan(folder)
                continue
            seen.add(job_id)
            snap.records.append(record)
        snap.records.sort(key=lambda r: (r.get("created_at", 0), r["id"]))
        found = Counter(r.get("status") for r in snap.records)
        with self._lock:
            for gone in set(self._cache) - seen:
                del self._cache[gone]
            self._counts = {state: found.get(state, 0) for state in STATES}
        return snap

    def counts(self) -> dict[str, int]:
        """Jobs by state as of the last scan (the metrics read this; it does no I/O)."""
        with self._lock:
            return dict(self._counts)

    def read_result(self, job_id: str) -> dict[str, Any]:
        return json.loads((self.dir(job_id) / RESULT).read_text(encoding="utf-8"))

    # ---------------------------------------------------------------- write (lease holders only)

    def write(self, record: dict[str, Any]) -> None:
        folder = self.dir(record["id"])
        if not folder.is_dir():
            # Removed meanwhile; atomic_write_json would create the folder again with a lone record in it.
            raise FileNotFoundError(f"job folder {folder} is gone")
        url = record.get("callback_url")
        if has_userinfo(url) and not is_redacted(url):
            _write_target(folder, str(url))  # never into job.json, which the API shows
        elif is_redacted(url) and not (folder / CALLBACK).exists():
            self._keep_legacy_target(folder)
        atomic_write_json(folder / RECORD, _public(record))

    @staticmethod
    def _keep_legacy_target(folder: Path) -> None:
        """A record written before credentials were kept apart has them in job.json: move them out before
        the redacted copy replaces it, or its callback would go without them."""
        try:
            url = json.loads((folder / RECORD).read_text(encoding="utf-8")).get("callback_url")
        except (OSError, ValueError, AttributeError):
            return
        if has_userinfo(url) and not is_redacted(url):
            _write_target(folder, url)

    def write_result(self, job_id: str, doc: dict[str, Any]) -> None:
        atomic_write_json(self.dir(job_id) / RESULT, doc)

    def drop_inputs(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            for path in self.dir(job_id).iterdir():
                if path.name not in (RECORD, RESULT, DELETED, CALLBACK):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    def remove(self, job_id: str) -> None:
        """Delete the job's folder. The record goes first, so no reader ever sees a half-removed job."""
        folder = self.dir(job_id)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (folder / RECORD).unlink()
        shutil.rmtree(folder, ignore_errors=True)

    # ---------------------------------------------------------------- any replica

    def mark_deleted(self, job_id: str) -> None:
        """Ask the process holding the job to remove it when it lets go (it checks before and after a run)."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir(job_id) / DELETED).touch()

    def _read_cached(self, job_id: str, folder: Path) -> dict[str, Any] | None:
        path = folder / RECORD
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(job_id)
        if cached is not None and cached[0] == key:
            return _public(cached[1])
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as exc:  # cannot happen with atomic writes; say so rather than hide the job
            log.error("job record %s is unreadable: %s", path, exc)
            return None
        with self._lock:
            self._cache[job_id] = (key, record)
        return _public(record)

    def _sweep_orphan(self, folder: Path) -> None:
        try:
            newest = max([folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.iterdir()])
        except OSError:
            return
        if time.time() - newest > ORPHAN_AGE_S:
            log.warning("removing job folder without a record: %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of `record` that may be shown: a callback URL's credentials redacted (records written by an
    older version still hold them on disk)."""
    out = dict(record)
    if has_userinfo(out.get("callback_url")):
        out["callback_url"] = redact(out["callback_url"])
    return out


def _write_target(folder: Path, url: str) -> None:
    atomic_write_bytes(folder / CALLBACK, url.encode("utf-8"), perms=0o600)


def _now() -> float:
    return round(time.time(), 3)

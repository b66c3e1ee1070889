"""Multipart uploads streamed to disk with a hard size limit.

Starlette's form parser spools files without a size bound, so we drive python-multipart's push parser over
``request.stream()`` ourselves: the file part goes straight to a file on disk chunk by chunk, the running
byte count is checked on every chunk, and the upload stops being stored the moment it passes the limit.
Form fields (model, language, ...) are small and kept in memory under their own cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from transcription.layout import OWNER_HOST, PROCESS_TOKEN, Lease

from .errors import ApiError

FIELD_LIMIT = 64 * 1024  # bytes per non-file field
# A known speaker's reference clip is a data URL of 2-10 s of audio in any format: up to a few MiB.
REFERENCE_FIELDS = ("known_speaker_references", "known_speaker_references[]")
REFERENCE_LIMIT = 4 * 1024 * 1024
MAX_KNOWN_SPEAKERS = 4  # as OpenAI's API; refused as the fields arrive, so at most this many are held
FIELDS_MAX = 64
# After a rejected upload we keep reading (and discarding) a bounded amount, like nginx's lingering close, so
# that a client that writes its whole body before reading (httpx, the openai client) sees our 413 rather
# than a reset connection. Past these bounds the connection is simply closed.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_MAX_SECONDS = 10.0
# A client that sends nothing for this long loses its upload (408): stalled or deliberately slow senders
# must not hold a connection, a temporary file and, for a job, a queue place forever.
UPLOAD_IDLE_TIMEOUT_S = 30.0


@dataclass
class Upload:
    fields: dict[str, list[str]] = field(default_factory=dict)
    file_path: Path | None = None
    filename: str | None = None
    size: int = 0

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def get_all(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def get_bool(self, name: str) -> bool | None:
        """A true/false field (also 1/0); None when absent or empty; anything else is a 400 naming it."""
        raw = self.get(name)
        if raw in (None, ""):
            return None
        lowered = raw.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ApiError(400, f"{name} must be true or false", "invalid_value", param=name)
        return lowered in ("true", "1")


class _Receiver:
    """python-multipart callbacks that route the file part to disk and fields to memory."""

    def __init__(self, dest: Path, file_field: str, max_bytes: int) -> None:
        self.dest = dest
        self.file_field = file_field
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.too_large = False
        self.error: ApiError | None = None
        self._headers: dict[str, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._name: str | None = None
        self._is_file = False
        self._buf = bytearray()
        self._fh: BinaryIO | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_header_field": lambda d, s, e: self._acc("_header_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._acc("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }

    def _acc(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None
        self._is_file = False
        self._buf = bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition"))
        name = params.get(b"name")
        self._name = name.decode("utf-8", "replace") if name is not None else None
        filename = params.get(b"filename")
        if self._name in REFERENCE_FIELDS and self._references() >= MAX_KNOWN_SPEAKERS:
            self._fail(
                ApiError(
                    400,
                    f"at most {MAX_KNOWN_SPEAKERS} known speakers",
                    "invalid_value",
                    param="known_speaker_references",
                )
            )
            return
        if self._name == self.file_field and filename is not None:
            if self._fh is not None:
                self._fail(ApiError(400, "only one 'file' part is allowed", "invalid_request", param="file"))
                return
            self._is_file = True
            self.upload.filename = Path(filename.decode("utf-8", "replace").replace("\\", "/")).name
            self.upload.file_path = self.dest
            self._fh = open(self.dest, "wb")  # noqa: SIM115 - closed in close()

    def _references(self) -> int:
        return sum(len(self.upload.get_all(name)) for name in REFERENCE_FIELDS)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None or self.too_large:
            return
        chunk = data[start:end]
        if self._is_file:
            self.upload.size += len(chunk)
            if self.upload.size > self.max_bytes:
                self.too_large = True
                return
            assert self._fh is not None
            self._fh.write(chunk)
        else:
            self._buf += chunk
            limit = REFERENCE_LIMIT if self._name in REFERENCE_FIELDS else FIELD_LIMIT
            if len(self._buf) > limit:
                self._fail(ApiError(400, f"form field {self._name!r} is too long", "invalid_request"))

    def _part_end(self) -> None:
        if self.error is not None or self.too_large or self._is_file or self._name is None:
            return
        if sum(len(v) for v in self.upload.fields.values()) >= FIELDS_MAX:
            self._fail(ApiError(400, "too many form fields", "invalid_request"))
            return
        self.upload.fields.setdefault(self._name, []).append(self._buf.decode("utf-8", "replace"))

    def _fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


async def receive_upload(
    request: Request,
    dest: Path,
    max_bytes: int,
    file_field: str = "file",
    idle_timeout_s: float = UPLOAD_IDLE_TIMEOUT_S,
) -> Upload:
    """Parse a multipart request, writing the `file_field` part to `dest`.

    Raises ApiError (400 malformed, 408 idle for `idle_timeout_s`, 413 too large) and ClientDisconnect; on
    any failure `dest` is removed.
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(400, "expected a multipart/form-data body with a 'file' part", "invalid_request")
    too_large = ApiError(
        413, f"upload exceeds the limit of {max_bytes // (1024 * 1024)} MiB", "file_too_large", param="file"
    )
    declared = request.headers.get("content-length")
    receiver = _Receiver(dest, file_field, max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    ok = False
    try:
        if declared and declared.isdigit() and int(declared) > max_bytes + FIELD_LIMIT * 4:
            # Rejected on the declared size alone: nothing is stored.
            await _drain(request.stream())
            raise too_large
        stream = request.stream()
        async for chunk in _within(stream, idle_timeout_s):
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise ApiError(400, f"malformed multipart body: {exc}", "invalid_request") from None
            if receiver.error is not None:
                raise receiver.error
            if receiver.too_large:
                await _drain(stream)
                raise too_large
        if receiver.error is not None:
            raise receiver.error
        if receiver.upload.file_path is None:
            raise ApiError(400, "the multipart body has no 'file' part", "invalid_request", param="file")
        if receiver.upload.size == 0:
            raise ApiError(400, "the uploaded file is empty", "invalid_audio", param="file")
        ok = True
        return receiver.upload
    finally:
        receiver.close()
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()


async def _within(stream: AsyncIterator[bytes], idle_timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks, each of which must arrive within `idle_timeout_s` of the previous one."""
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), idle_timeout_s)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ApiError(
                408,
                f"the upload sent no data for {idle_timeout_s:g} s and was abandoned",
                "upload_timeout",
                param="file",
            ) from None
        yield chunk


async def _drain(stream: AsyncIterator[bytes]) -> None:
    """Read and discard what is left of the body, within bounds (see DRAIN_MAX_*)."""
    seen = 0
    deadline = time.monotonic() + DRAIN_MAX_SECONDS
    with contextlib.suppress(ClientDisconnect):
        async for chunk in stream:
            seen += len(chunk)
            if seen > DRAIN_MAX_BYTES or time.monotonic() > deadline:
                return


class UploadSpace:
    """This process's folder for uploads in progress: ``<root>/.slower-whisper/uploads/<host>-<pid>-<n>/``.

    Several replicas share the root, so none may wipe the uploads folder at start-up: each keeps its own
    subfolder under a lease (renewed while the process lives), and a subfolder whose lease went stale (its
    process died) is removed by whichever replica sweeps next.
    """

    def __init__(self, parent: Path, lease_ttl: float) -> None:
        self.parent = parent
        self.leases = parent / ".leases"
        self.lease_ttl = lease_ttl
        self.folder = parent / f"{OWNER_HOST}-{os.getpid()}-{PROCESS_TOKEN[:8]}"
        self._lease = Lease(self.leases, self.folder.name, lease_ttl)

    def open(self) -> None:
        if not self._lease.acquire():
            raise RuntimeError(f"upload folder {self.folder} is leased by another process")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sweep()

    def sweep(self) -> None:
        """Remove the upload folders of processes that are gone (their uploads can never be resumed)."""
        try:
            entries = [p for p in self.parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except FileNotFoundError:
            return
        for path in entries:
            if path == self.folder:
                continue
            lease = Lease(self.leases, path.name, self.lease_ttl)
            if lease.acquire():
                try:
                    shutil.rmtree(path, ignore_errors=True)
                finally:
                    lease.release()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty: a request still writing keeps its files
        self._lease.release()

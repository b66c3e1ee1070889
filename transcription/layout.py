"""The root folder: where inputs are found, where each output goes, atomic writes and leases."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

# Extensions we treat as media. Anything else in raw_audio/ (notes, checksums) is ignored, not failed.
MEDIA_EXTENSIONS = frozenset(
    [
        ".wav",
        ".wave",
        ".flac",
        ".mp3",
        ".m4a",
        ".m4b",
        ".aac",
        ".ogg",
        ".oga",
        ".opus",
        ".wma",
        ".aiff",
        ".aif",
        ".aifc",
        ".amr",
        ".au",
        ".snd",
        ".caf",
        ".ac3",
        ".dts",
        ".mka",
        ".spx",
        ".ape",
        ".wv",
        ".tta",
        ".gsm",
        ".3gp",
        ".3g2",
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".wmv",
        ".flv",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".vob",
        ".ogv",
        ".mxf",
        ".dv",
    ]
)
# Names that mean "still being written" by common upload tools.
PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".filepart", ".uploading")


@dataclass(frozen=True)
class Input:
    """One recording under raw_audio/ and the stem its outputs are named by."""

    path: Path
    rel: str  # posix path relative to raw_audio/, recorded as the JSON "file"
    stem: str  # posix relative output stem, subfolders kept


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.raw_audio = self.root / "raw_audio"
        self.input_audio = self.root / "input_audio"
        self.transcripts = self.root / "transcripts"
        self.whisper_json = self.root / "whisper_json"
        self.state = self.root / ".slower-whisper"
        self.jobs = self.state / "jobs"
        self.leases = self.state / "leases"
        self.runs = self.state / "runs"
        self.failures = self.state / "failures"

    def ensure(self) -> None:
        for folder in (
            self.raw_audio,
            self.input_audio,
            self.transcripts,
            self.whisper_json,
            self.state,
            self.leases,
            self.runs,
            self.failures,
        ):
            folder.mkdir(parents=True, exist_ok=True)

    def wav_path(self, stem: str) -> Path:
        return self.input_audio / f"{stem}.wav"

    def json_path(self, stem: str) -> Path:
        return self.whisper_json / f"{stem}.json"

    def text_path(self, stem: str, fmt: str) -> Path:
        return self.transcripts / f"{stem}.{fmt}"

    def failure_path(self, stem: str) -> Path:
        return self.failures / f"{_safe_key(stem)}.json"

    def discover(self) -> list[Input]:
        """Every media file under raw_audio/, sorted, each with a stem no other input shares."""
        if not self.raw_audio.is_dir():
            return []
        found: list[tuple[Path, PurePosixPath]] = []
        for dirpath, dirnames, filenames in os.walk(self.raw_audio, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES):
                    continue
                if Path(name).suffix.lower() not in MEDIA_EXTENSIONS:
                    continue
                path = Path(dirpath) / name
                found.append((path, PurePosixPath(path.relative_to(self.raw_audio).as_posix())))
        found.sort(key=lambda item: str(item[1]))
        # a.mp3 and a.wav in one folder would both be "a": keep the extension in both stems then.
        counts: dict[str, int] = {}
        for _, rel in found:
            counts[str(rel.with_suffix(""))] = counts.get(str(rel.with_suffix("")), 0) + 1
        inputs = []
        for path, rel in found:
            plain = str(rel.with_suffix(""))
            inputs.append(Input(path=path, rel=str(rel), stem=plain if counts[plain] == 1 else str(rel)))
        return inputs


def _safe_key(stem: str) -> str:
    import hashlib

    return hashlib.sha1(stem.encode("utf-8")).hexdigest()[:20]


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator:
    """Write to a temporary file beside `path`, fsync it, then rename over `path`.

    A crash leaves either the old file or the new one, never a half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_writer(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def remove_stale_temporaries(folder: Path, older_than_s: float = 3600.0) -> None:
    """Delete temporaries a killed process left behind (never a finished output)."""
    if not folder.is_dir():
        return
    now = time.time()
    for tmp in folder.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()


# ---------------------------------------------------------------- leases

OWNER_HOST = socket.gethostname()
# Distinguishes this process from an earlier one that had the same pid (pid 1 in a restarted container).
PROCESS_TOKEN = uuid.uuid4().hex


class Lease:
    """An expiring claim on one input, so several workers on one volume never do the same file.

    The lease is a small JSON file created with O_EXCL. Its holder renews it from a heartbeat thread; a lease
    whose expiry has passed (its holder died), or whose holder is a dead process on this host, is taken over.
    """

    def __init__(self, folder: Path, key: str, ttl_s: float) -> None:
        self.path = Path(folder) / f"{_safe_key(key)}.lease"
        self.key = key
        self.ttl_s = ttl_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps(
            {
                "key": self.key,
                "token": self.token,
                "host": OWNER_HOST,
                "pid": os.getpid(),
                "process": PROCESS_TOKEN,
                "expires_at": time.time() + self.ttl_s,
            }
        ).encode()

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._record())
            self._start_heartbeat()
            return True
        return False

    def _break_if_stale(self) -> bool:
        try:
            held = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            # Empty or torn: its creator is between O_EXCL and its write, or was killed there. Judge by age
            # alone, or a claim seconds old would be taken over and two workers would do one file.
            held = {}
            try:
                if time.time() - self.path.stat().st_mtime < self.ttl_s:
                    return False
            except FileNotFoundError:
                return True
        if held and not _lease_is_stale(held):
            return False
        # Move it aside under a unique name, then check we moved the stale one and not a fresh successor.
        aside = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        try:
            moved = json.loads(aside.read_bytes() or b"{}")
        except (OSError, ValueError):
            moved = {}
        if held and moved.get("token") != held.get("token"):
            with contextlib.suppress(OSError):
                os.link(aside, self.path)  # put the live one back; fails harmlessly if re-created
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.path.stem}", daemon=True)
        self._thread.start()

    def held(self) -> bool:
        """Whether the lease file still names this holder (after a stall past the TTL it may not)."""
        try:
            return json.loads(self.path.read_bytes()).get("token") == self.token
        except (OSError, ValueError):
            return False

    def _beat(self) -> None:
        while not self._stop.wait(max(1.0, self.ttl_s / 4)):
            if not self.held():
                # Taken over after a stall: renewing now would overwrite the successor's claim.
                log.warning("lease lost to another worker", extra={"key": self.key})
                return
            with contextlib.suppress(OSError):
                atomic_write_bytes(self.path, self._record())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.held():
            with contextlib.suppress(OSError):
                self.path.unlink()


def _lease_is_stale(held: dict) -> bool:
    if float(held.get("expires_at", 0)) < time.time():
        return True
    if held.get("host") == OWNER_HOST:
        pid = int(held.get("pid", 0))
        if pid == os.getpid():
            return held.get("process") != PROCESS_TOKEN
        return not _pid_alive(pid)
    return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

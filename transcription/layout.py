"""The root folder: where inputs are found, where each output goes, atomic writes and leases."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections import Counter
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
        """Every media file under raw_audio/, sorted, each with a stem no other input shares.

        Links are followed, to files and folders, inside raw_audio/ or outside it (data is often mounted or
        linked in), but each real folder is walked once and each real file is one input (by device and
        inode), so `up -> ..` or `loop -> .` cannot multiply inputs. Real paths are walked before links, so
        an input reached both ways is named by its real path. The root itself and its generated folders
        (input_audio/, transcripts/, whisper_json/, .slower-whisper/) are never walked and files in them are
        never inputs, whichever link reaches them. Hidden names and partial uploads are skipped.
        """
        top = _dir_id(self.raw_audio)
        if top is None:
            return []
        generated = {i for i in map(_dir_id, self.generated_folders()) if i is not None}
        never = generated | {i for i in [_dir_id(self.root)] if i is not None}
        walked: set[tuple[int, int]] = set()
        found: dict[object, _Found] = {}
        pending: list[_Folder] = [_Folder(self.raw_audio, (), False, top)]
        linked: list[_Folder] = []  # folders reached through a link wait until every real one is walked
        while pending or linked:
            if not pending:
                linked.sort(key=lambda f: f.parts, reverse=True)
                pending.append(linked.pop())
            folder = pending.pop()
            if folder.ident in walked or folder.ident in never:
                continue
            walked.add(folder.ident)
            subfolders: list[_Folder] = []
            for entry in _scan(folder.path):
                name = entry.name
                if name.startswith("."):
                    continue
                is_link = entry.is_symlink()
                via_link = folder.via_link or is_link
                try:
                    st: os.stat_result | None = entry.stat()  # follows links
                except OSError:
                    st = None  # dangling link: kept if it looks like media, so it is reported as failed
                if st is not None and stat.S_ISDIR(st.st_mode):
                    sub = _Folder(Path(entry.path), (*folder.parts, name), via_link, (st.st_dev, st.st_ino))
                    (linked if is_link else subfolders).append(sub)
                    continue
                if not _is_media(name):
                    continue
                if via_link and st is not None and _inside(Path(entry.path), generated):
                    continue  # a link to one of our own outputs
                key: object = (st.st_dev, st.st_ino) if st is not None else entry.path
                cand = _Found(Path(entry.path), (*folder.parts, name), via_link)
                if key not in found or cand.rank < found[key].rank:
                    found[key] = cand
            # Depth first in name order: pushed reversed so the first name is walked first.
            pending.extend(sorted(subfolders, key=lambda f: f.parts, reverse=True))
        return _with_stems(sorted(found.values(), key=lambda f: f.rel))

    def generated_folders(self) -> list[Path]:
        return [self.input_audio, self.transcripts, self.whisper_json, self.state]


@dataclass(frozen=True)
class _Folder:
    path: Path
    parts: tuple[str, ...]  # relative to raw_audio/, as reached
    via_link: bool
    ident: tuple[int, int]  # (st_dev, st_ino) of the real folder


@dataclass(frozen=True)
class _Found:
    path: Path
    parts: tuple[str, ...]
    via_link: bool

    @property
    def rel(self) -> str:
        return "/".join(printable_name(p) for p in self.parts)

    @property
    def rank(self) -> tuple[bool, str]:
        return (self.via_link, self.rel)


def printable_name(name: str) -> str:
    """`name` as valid UTF-8 text: bytes that are not UTF-8 (surrogate-escaped by os) become `\\xNN`.

    A file name is any bytes on Linux; the JSON `file`, logs, reports and output names need text.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _with_stems(found: list[_Found]) -> list[Input]:
    # a.mp3 and a.wav in one folder would both be "a": keep the extension in both stems then.
    plain = [str(PurePosixPath(f.rel).with_suffix("")) for f in found]
    counts = Counter(plain)
    stems = [p if counts[p] == 1 else f.rel for p, f in zip(plain, found, strict=True)]
    # Escaped names can meet a real name (`a\xff` and a literal backslash one): the raw bytes decide.
    repeated = Counter(stems)
    for i, f in enumerate(found):
        if repeated[stems[i]] > 1:
            raw = b"/".join(os.fsencode(p) for p in f.parts)
            stems[i] += "~" + hashlib.sha1(raw).hexdigest()[:8]
    return [Input(path=f.path, rel=f.rel, stem=s) for f, s in zip(found, stems, strict=True)]


def _is_media(name: str) -> bool:
    return not name.lower().endswith(PARTIAL_SUFFIXES) and Path(name).suffix.lower() in MEDIA_EXTENSIONS


def _dir_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _scan(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:  # unreadable folder: its files are missed, the rest of the run goes on
        log.warning(
            "cannot read folder", extra={"folder": printable_name(str(folder)), "error": exc.strerror}
        )
        return []


def _inside(path: Path, folders: set[tuple[int, int]]) -> bool:
    """Whether the real location of `path` lies under one of `folders` (given by device and inode)."""
    real = Path(os.path.realpath(path))
    return any(_dir_id(parent) in folders for parent in real.parents)


def _safe_key(stem: str) -> str:
    # surrogateescape: a key is never a reason to fail, whatever bytes the name had.
    return hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:20]


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb", perms: int = 0o644) -> Iterator:
    """Write to a temporary file beside `path`, fsync it, then rename over `path`.

    A crash leaves either the old file or the new one, never a half-written file under the final name.
    `perms` are set before the rename, so a secret is never readable by others under its final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, perms)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes, perms: int = 0o644) -> None:
    with atomic_writer(path, "wb", perms) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_writer(path, "w") as fh:
        fh.write(text)


def atomic_write_json(path: Path, obj: object) -> None:
    text = json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name's undecodable bytes (in an error message, say): escape them
        text = json.dumps(_printable(obj), ensure_ascii=False, indent=2) + "\n"
    atomic_write_text(path, text)


def _printable(obj: object) -> object:
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(obj, dict):
        return {_printable(k): _printable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_printable(v) for v in obj]
    return obj


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

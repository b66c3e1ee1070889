"""Logging: readable lines on a terminal, one JSON object per line otherwise (for log collectors)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import TextIO

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        line = f"{record.levelname.lower():7s} {record.getMessage()}"
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _StatusHandler(logging.StreamHandler):
    """Log lines above a status line (the batch run's progress bar) kept at the bottom of a terminal: the
    status line is cleared before each log line and drawn again after it, so the two never share a line."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.status = ""

    def emit(self, record: logging.LogRecord) -> None:
        with _STATUS_LOCK:
            if self.status:
                self.stream.write(_CLEAR)
            super().emit(record)
            if self.status:
                self.stream.write(self.status)
                self.stream.flush()


_CLEAR = "\r\x1b[2K"  # to the line's start, erase it
_STATUS_LOCK = threading.RLock()
_handler: _StatusHandler | None = None


def show_status(text: str, *, final: bool = False) -> None:
    """Draw `text` as the status line under the log lines; `final` leaves it there as an ordinary line."""
    stream = _handler.stream if _handler is not None else sys.stderr
    with _STATUS_LOCK:
        stream.write(_CLEAR + text + ("\n" if final else ""))
        stream.flush()
        if _handler is not None:
            _handler.status = "" if final else text


def setup(level: str, fmt: str) -> None:
    global _handler
    _handler = _StatusHandler(sys.stderr)
    _handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level)
    # Third-party chatter at INFO (HTTP requests of the hub client, ...) drowns the run's own lines.
    for noisy in ("httpx", "httpcore", "urllib3", "huggingface_hub", "faster_whisper"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))

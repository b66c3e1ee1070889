"""The HTTP service: ``slower-whisper serve``.

`serve` runs the app under uvicorn until SIGINT/SIGTERM; `create_app` builds it (tests, embedding).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import time
from typing import Any

from transcription.config import Settings

from .app import create_app
from .realtime.hub import LiveHub
from .realtime.transport import MAX_FRAME_BYTES, LiveWebSocketProtocol
from .state import GRACE_S, Service

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)
# uvicorn's share of the grace period: open requests get this long, jobs get what is left of GRACE_S.
JOB_GRACE_S = 5.0
REQUEST_GRACE_S = GRACE_S - JOB_GRACE_S
LIVE_STOP_S = 15.0  # live sessions' share: their committed turns, their close, their decode threads


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(settings: Settings, host: str, port: int, allow_unauthenticated: bool) -> int:
    """Run the service until stopped; returns the process exit code (2: refused or model failed to load)."""
    if not settings.api_keys and not is_loopback(host) and not allow_unauthenticated:
        print(
            f"slower-whisper serve: refusing to listen on {host} without an API key. Set "
            "SLOWER_WHISPER_API_KEY, bind to 127.0.0.1, or pass --allow-unauthenticated to accept "
            "requests from anyone who can reach this port.",
            file=sys.stderr,
        )
        return 2
    # Refused before the model loads: uvicorn would bind port 99999 as 99999 % 65536 (and log 99999), and a
    # busy port would only fail after minutes of model loading.
    if not 1 <= port <= 65535:
        print(f"slower-whisper serve: --port {port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    try:
        sock = _listen_socket(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"slower-whisper serve: cannot listen on {host} port {port}: {reason}", file=sys.stderr)
        return 2
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    log.info("listening on http://%s:%d", shown, port)  # uvicorn says nothing when handed a socket
    with sock:
        return _run(settings, host, port, sock)


def _listen_socket(host: str, port: int) -> socket.socket:
    """The bound socket uvicorn serves on: bound here, so a busy port fails now, and handed over, so no
    other process can take the port between this check and uvicorn's start."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart within TIME_WAIT
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _run(settings: Settings, host: str, port: int, sock: socket.socket) -> int:
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if svc.loop is not None:
                svc.loop.call_soon_threadsafe(svc.begin_shutdown)
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after a graceful stop, so the process would die "killed by
            # SIGTERM"; a graceful stop is a clean exit for us (code 0, or the code set by a fatal error).
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Live sessions end first, each with its reason: uvicorn's own shutdown would drop their
            # sockets with a bare close frame and leave their decode threads inside the model.
            deadline = svc.shutdown_deadline or time.monotonic() + GRACE_S
            await live.stop(min(deadline, time.monotonic() + LIVE_STOP_S))
            self.config.timeout_graceful_shutdown = max(1, int(deadline - time.monotonic() - JOB_GRACE_S))
            await super().shutdown(sockets)

    def fatal(code: int) -> None:
        svc.exit_code = code
        server.should_exit = True

    app = create_app(settings, on_fatal=fatal)
    svc: Service = app.state.service
    live: LiveHub = app.state.live
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=True,
        server_header=False,
        timeout_graceful_shutdown=int(REQUEST_GRACE_S),
        lifespan="on",
        ws=LiveWebSocketProtocol,
        ws_max_size=MAX_FRAME_BYTES,
    )
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return int(exc.code) if isinstance(exc.code, int) else 1
    if not server.started and svc.exit_code == 0:
        return 1
    if svc.scheduler.running or live.decoding:
        # A worker thread is still inside the model (past the grace period): its job is queued again on
        # disk, and waiting for the thread would hold the exit for as long as that file takes (and a live
        # decode thread torn down inside the model aborts the process).
        log.warning("exiting with %d transcription(s) still running", svc.scheduler.running)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(svc.exit_code or 0)
    return svc.exit_code

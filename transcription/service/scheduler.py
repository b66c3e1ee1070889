"""A bounded worker pool for inference, shared by synchronous requests and jobs.

At most `workers` calls run at once, in threads (CTranslate2 releases the GIL, so they really run in
parallel); at most `queue_size` more wait their turn, first come first served (jobs accepted by this
process and still queued on disk count as waiting: see jobs/runner.py). Admission is decided up front
(`admit`), so a request that cannot be served is refused with 429 before its upload is stored, and a caller
that gives up while waiting (client disconnect, shutdown) leaves the line without ever starting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


class Ticket:
    """A place in the system: held from admission until the work ends or is abandoned before starting."""

    __slots__ = ("started", "released")

    def __init__(self) -> None:
        self.started = False
        self.released = False


class Scheduler:
    def __init__(self, workers: int, queue_size: int) -> None:
        self.workers = workers
        self.queue_size = queue_size
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asr")
        self._admitted = 0  # running + waiting
        self._running = 0
        self._line: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._admitted - self._running

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def closed(self) -> bool:
        return self._closed

    def check(self, extra: int = 0) -> None:
        """Raise QueueFull when `extra` more places (queued jobs) would not fit; ShuttingDown after close."""
        if self._closed:
            raise ShuttingDown
        if self._admitted + extra >= self.workers + self.queue_size:
            raise QueueFull

    def admit(self, force: bool = False, extra: int = 0) -> Ticket:
        """Reserve a place, or raise QueueFull (ShuttingDown after close). `extra`: places held outside the
        scheduler (jobs queued on disk); `force` skips the bound."""
        if self._closed:
            raise ShuttingDown
        if not force:
            self.check(extra)
        self._admitted += 1
        return Ticket()

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket whose work never started (no-op once started: the work releases it)."""
        if not ticket.started and not ticket.released:
            ticket.released = True
            self._admitted -= 1

    async def run(self, ticket: Ticket, fn: Callable[[], T]) -> T:
        """Wait for a worker, then run `fn` in it. Cancelling while waiting gives the place back; cancelling
        while running only stops waiting for the result (a thread cannot be interrupted), and the place is
        freed when `fn` returns."""
        loop = asyncio.get_running_loop()
        try:
            if self._running >= self.workers or self._line:
                turn: asyncio.Future[None] = loop.create_future()
                self._line.append(turn)
                try:
                    await turn
                except BaseException:
                    if turn in self._line:
                        self._line.remove(turn)
                    elif turn.done() and not turn.cancelled() and turn.exception() is None:
                        # We were handed a worker slot but will not use it: pass it on.
                        self._running -= 1
                        self._wake(loop)
                    raise
            else:
                self._running += 1
            if self._closed:
                self._running -= 1
                self._wake(loop)
                raise ShuttingDown
        except BaseException:
            self.release(ticket)
            raise
        ticket.started = True
        future = self._pool.submit(fn)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._finish, ticket, loop))
        return await asyncio.wrap_future(future, loop=loop)

    def _finish(self, ticket: Ticket, loop: asyncio.AbstractEventLoop) -> None:
        ticket.released = True
        self._admitted -= 1
        self._running -= 1
        self._wake(loop)

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand free worker slots to the first waiters in line."""
        while self._line and self._running < self.workers:
            turn = self._line.popleft()
            if turn.done():
                continue
            self._running += 1
            if self._closed:
                self._running -= 1
                turn.set_exception(ShuttingDown())
            else:
                turn.set_result(None)

    def close(self) -> None:
        """Stop starting work: everyone waiting in line gets ShuttingDown; running work carries on."""
        self._closed = True
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_exception(ShuttingDown())

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no work runs; False when `timeout` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._running > 0:
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(0.1, left))
        return True

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""One way for every figure a process keeps in memory to reach the web's `/metrics`: Postgres.

On Render each process is a separate service on its own host and the web runs several processes
(`WEB_CONCURRENCY`) on several instances: Prometheus' multiprocess mode (one shared directory of mmap
files) cannot span hosts, and a Pushgateway would be one more stateful service. So each process adds
its increments to rows (`count = count + delta`: restarts and several processes add up, nothing goes
backwards) and any web process reads the totals when scraped (ADR 0018).

Observing stays a dict increment under a lock: nothing on the first-SMS path waits for the database. A
daemon thread flushes every `FLUSH_SECONDS` on a connection of its own; a scrape flushes its own
process's increments first (`flush_now`). A crash loses at most the last `FLUSH_SECONDS`.

Each source registers a function `(connect) -> rows written` that drains its increments, writes them
with `connect()` (opened only when there is something to write) and puts them back if the write fails.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from nmc.settings import get_settings

log = structlog.get_logger(module="observability")

FLUSH_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 5.0

Connect = Callable[[], "psycopg.Connection[Any]"]
Flush = Callable[[Connect], int]
_FLUSHES: list[Flush] = []


def flushed_to_postgres(flush: Flush) -> Flush:
    """Register a source's flush (module import time)."""
    if flush not in _FLUSHES:
        _FLUSHES.append(flush)
    return flush


class Flusher:
    """The process's flusher: the thread, its connection, and the lock that keeps flushes one at a time
    (a scrape's and the thread's never both drain and write the same increments out of order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="metrics-flusher", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def stop(self) -> None:
        """Stop the thread, write what is left, close the connection (app shutdown, worker stop, tests)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT_SECONDS)
        if thread is not None:
            self.flush_once()
        with self._lock:
            self._close()

    def flush_once(self) -> int:
        """Every source's increments written now; 0 rows (and a warning) when the database is away."""
        with self._lock:
            written = 0
            try:
                for flush in _FLUSHES:
                    written += flush(self._connect)
            except Exception as exc:  # the database away: the increments wait for the next flush
                log.warning("metrics.flush_failed", error=f"{type(exc).__name__}: {exc}")
                self._close()
            return written

    def _run(self) -> None:
        while not self._stopping.wait(FLUSH_SECONDS):
            self.flush_once()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(get_settings().DATABASE_URL, autocommit=True)
        return self._connection

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            try:
                connection.close()
            except Exception as exc:  # closing a broken connection: nothing left to save
                log.debug("metrics.flusher_close_failed", error=str(exc))


FLUSHER = Flusher()


def start_flusher() -> None:
    """Idempotent: the web's start-up, the worker's, the jobs worker's boot, a provider request."""
    FLUSHER.start()


def stop_flusher() -> None:
    FLUSHER.stop()


def flush_now() -> int:
    """This process's increments written before a scrape reads the totals (run in a thread)."""
    return FLUSHER.flush_once()


@atexit.register
def _flush_at_exit() -> None:
    """A CLI command or a process that never called `stop_flusher`: its last increments, once."""
    if FLUSHER.running:
        FLUSHER.stop()

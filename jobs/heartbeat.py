"""The jobs process beats `worker_heartbeats` (process `jobs`) every second, as the worker does, so the
web's `/metrics` can say whether it is alive (`process_instances_alive{process="jobs"}`, issue #13).

A Dramatiq middleware: the beat starts when the Dramatiq worker boots and stops (deleting its row)
when it shuts down. A thread with its own connection: it never waits behind an actor's work.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any
from uuid import uuid4

import dramatiq
import psycopg
import structlog

from nmc.observability.flusher import start_flusher, stop_flusher
from nmc.settings import get_settings

log = structlog.get_logger(module="jobs")

HEARTBEAT_SECONDS = 1.0
_BEAT = """
    INSERT INTO worker_heartbeats (worker_id, process, host, pid) VALUES (%s, 'jobs', %s, %s)
    ON CONFLICT (worker_id) DO UPDATE SET beat_at = now()
"""


class JobsHeartbeat(dramatiq.Middleware):
    def __init__(self) -> None:
        self.worker_id = uuid4()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="jobs-heartbeat", daemon=True)
        self._thread.start()
        start_flusher()  # the jobs' in-memory figures (provider requests) reach the web's /metrics

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        stop_flusher()

    def _run(self) -> None:
        connection: psycopg.Connection[Any] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if connection is None or connection.closed:
                        connection = psycopg.connect(get_settings().DATABASE_URL, autocommit=True)
                    connection.execute(_BEAT, (self.worker_id, socket.gethostname(), os.getpid()))
                except psycopg.Error as exc:
                    log.warning("jobs.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
                    connection = None
                self._stopping.wait(HEARTBEAT_SECONDS)
        finally:
            if connection is not None and not connection.closed:
                try:  # a clean stop: no stale row left behind
                    connection.execute("DELETE FROM worker_heartbeats WHERE worker_id = %s", (self.worker_id,))
                finally:
                    connection.close()

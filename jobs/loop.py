"""Dramatiq's AsyncIO middleware, with its event-loop thread a daemon.

Dramatiq's own thread is not a daemon: when a worker process is told twice to stop (a process group
signalled as a whole sends SIGTERM to Dramatiq's main process, which forwards it, and to the worker
itself), the worker takes its "kill" path (`sys.exit`) without the middleware's shutdown hook, and the
interpreter waits for that thread forever — the jobs process never exits. A daemon thread does not hold
the exit; a graceful stop still stops the loop first (`after_worker_shutdown`)."""

from __future__ import annotations

from typing import Any

from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.middleware.asyncio import AsyncIO


class DaemonAsyncIO(AsyncIO):
    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        thread = EventLoopThread(self.logger)
        thread.daemon = True
        thread.start(timeout=1.0)
        set_event_loop_thread(thread)

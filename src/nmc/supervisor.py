"""`nmc worker` with `WORKER_PROCESSES` > 1: a small supervisor that forks that many worker processes,
starts again one that dies (with backoff) and passes SIGTERM/SIGINT on for a graceful stop.

Why our own: uvicorn's `Multiprocess` supervisor is bound to its server config and a listening socket,
and Dramatiq's is bound to its CLI and broker; neither runs an arbitrary function. `multiprocessing`
gives the processes and `multiprocessing.connection.wait` on their sentinels tells when one exits, so
what is left here is the restart policy and the signal handling.

Each process is a whole worker: its own heartbeat row (`worker_heartbeats`, a fresh id per process), its
own claims (`claimed_by`), its own pools. A process that dies is, to the others, a dead worker: its
claims are taken over after `HEARTBEAT_STALE_SECONDS` exactly as for a worker on another machine.

`fork`, not `spawn`: the supervisor forks before any event loop, pool or thread exists in it (it only
read the settings and set up logging), so a child starts from the already-imported modules at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

log = structlog.get_logger(module="worker")

RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
HEALTHY_AFTER_SECONDS = 30.0  # a process that lived this long starts its backoff from the beginning again
STOP_GRACE_SECONDS = 25.0  # then what is left is killed (Render waits 30 s after SIGTERM)


def _child(target: Callable[[], None]) -> None:
    """In the forked process: the default signal handling back (the worker installs its own), then run."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    target()


@dataclass
class Slot:
    index: int
    process: BaseProcess | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, count: int, target: Callable[[], None], name: str = "worker") -> None:
        self._context = multiprocessing.get_context("fork")
        self._target = target
        self._name = name
        self._slots = [Slot(index) for index in range(count)]
        self._stopping = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        for slot in self._slots:
            self._start(slot)
        log.info(f"{self._name}.supervisor_started", processes=len(self._slots), pid=os.getpid())
        while not self._stopping:
            self._watch_once()
        self._stop_children()
        log.info(f"{self._name}.supervisor_stopped")
        return 0

    def pids(self) -> list[int]:
        return [slot.process.pid for slot in self._slots if slot.process is not None and slot.process.pid]

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, slot: Slot) -> None:
        process = self._context.Process(target=_child, args=(self._target,), name=f"{self._name}-{slot.index}")
        process.start()
        slot.process, slot.started_at, slot.restart_at = process, time.monotonic(), None
        log.info(f"{self._name}.process_started", slot=slot.index, pid=process.pid)

    def _watch_once(self) -> None:
        now = time.monotonic()
        running = {slot.process.sentinel: slot for slot in self._slots if slot.restart_at is None and slot.process}
        waits = [slot.restart_at - now for slot in self._slots if slot.restart_at is not None]
        for sentinel in wait(list(running), timeout=max(0.0, min([0.5, *waits]))):
            self._exited(running[sentinel])  # type: ignore[index]
        for slot in self._slots:
            if not self._stopping and slot.restart_at is not None and slot.restart_at <= time.monotonic():
                self._start(slot)

    def _exited(self, slot: Slot) -> None:
        assert slot.process is not None
        slot.process.join()
        if self._stopping:
            return
        lived = time.monotonic() - slot.started_at
        slot.failures = 1 if lived >= HEALTHY_AFTER_SECONDS else slot.failures + 1
        delay = RESTART_BACKOFF_SECONDS[min(slot.failures, len(RESTART_BACKOFF_SECONDS)) - 1]
        slot.restart_at = time.monotonic() + delay
        log.warning(
            f"{self._name}.process_died",
            slot=slot.index,
            pid=slot.process.pid,
            exit_code=slot.process.exitcode,
            lived_seconds=round(lived, 1),
            restart_in=delay,
        )

    def _stop_children(self) -> None:
        alive = [slot.process for slot in self._slots if slot.process is not None and slot.process.is_alive()]
        for process in alive:
            if process.pid:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in alive:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                log.warning(f"{self._name}.process_killed", pid=process.pid, after_seconds=STOP_GRACE_SECONDS)
                process.kill()
                process.join()

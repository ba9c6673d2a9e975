"""The jobs process yields the CPU to web and worker where they share a host (`just dev`, a single VM):
a calendar sync's parsing never slows a first SMS (issue #11; `just bench calendars-first-sms`). A
Dramatiq middleware, so only the Dramatiq worker process is reniced — the worker also imports `jobs` to
send messages, and must keep its priority. On Render each process is its own service: no effect there."""

from __future__ import annotations

import os
from typing import Any

import dramatiq

JOBS_NICENESS = 10


class YieldCpu(dramatiq.Middleware):
    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        os.nice(JOBS_NICENESS)

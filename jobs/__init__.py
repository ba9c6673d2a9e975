"""Dramatiq actors: slow, SDK-bound integration work, run by `dramatiq jobs` (the jobs process)."""

from nmc.observability.logging import configure_logging
from nmc.queue.dramatiq import setup_broker
from nmc.settings import get_settings

# Each Dramatiq worker process logs like web and worker (LOG_FORMAT, masking; runbook §5): this replaces
# any handler Dramatiq's CLI installed and writes to its stdout, the pipe the main process forwards.
configure_logging(get_settings().LOG_LEVEL)
broker = setup_broker()

from jobs.heartbeat import JobsHeartbeat  # noqa: E402

if not any(isinstance(m, JobsHeartbeat) for m in broker.middleware):
    broker.add_middleware(JobsHeartbeat())

from jobs.priority import YieldCpu  # noqa: E402

if not any(isinstance(m, YieldCpu) for m in broker.middleware):  # below web and worker on a shared host
    broker.add_middleware(YieldCpu())

from dramatiq.middleware.asyncio import AsyncIO  # noqa: E402

from jobs.loop import DaemonAsyncIO  # noqa: E402

if not any(isinstance(m, AsyncIO) for m in broker.middleware):  # async actors (calendars)
    broker.add_middleware(DaemonAsyncIO())

from jobs.billing import billing_tick  # noqa: E402
from jobs.calendars import (  # noqa: E402
    calendar_poll_tick,
    sync_calendar,
    sync_calendar_item,
    watch_calendar,
    write_back_booking,
)
from jobs.retention import purge_expired_rows  # noqa: E402

__all__ = [
    "billing_tick",
    "broker",
    "calendar_poll_tick",
    "purge_expired_rows",
    "sync_calendar",
    "sync_calendar_item",
    "watch_calendar",
    "write_back_booking",
]

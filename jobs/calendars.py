"""Calendar work (issue #11), in the jobs process: syncs, push channels, write-back, and the poll tick's
fan-out. Async actors on Dramatiq's event-loop thread (the AsyncIO middleware): a slow calendar awaits
without holding anyone else's sync, and nothing here shares the worker's first-SMS slots.

Retries: a sync is never retried by Dramatiq (its connection's `next_poll_at` carries the backoff, and the
poll tick runs it again); a write-back is, with exponential backoff (the job is idempotent).
"""

from __future__ import annotations

from uuid import UUID, uuid4

import dramatiq
import structlog

from nmc.calendars import (
    CALENDAR_QUEUE,
    ITEM_ACTOR,
    POLL_ACTOR,
    SYNC_ACTOR,
    WATCH_ACTOR,
    WRITE_BACK_ACTOR,
    poll_tick,
    run_item,
    run_sync,
    run_watch,
    write_back,
)
from nmc.observability.correlation import use_correlation_id
from nmc.observability.logging import clear_context

log = structlog.get_logger(module="calendars")
MINUTE_MS = 60_000


def _context(what: str) -> None:
    clear_context()
    use_correlation_id(f"calendar-{what}-{uuid4().hex}")


@dramatiq.actor(queue_name=CALENDAR_QUEUE, actor_name=SYNC_ACTOR, max_retries=0, time_limit=10 * MINUTE_MS)
async def sync_calendar(connection_id: str, full: bool = False, forced: bool = False) -> None:
    _context("sync")
    await run_sync(UUID(connection_id), full=full, forced=forced)


@dramatiq.actor(queue_name=CALENDAR_QUEUE, actor_name=ITEM_ACTOR, max_retries=0, time_limit=2 * MINUTE_MS)
async def sync_calendar_item(connection_id: str, item_id: str) -> None:
    """A webhook's item (a Jobber visit) re-queried; a failure is the next poll's (it re-pulls the window)."""
    _context("item")
    await run_item(UUID(connection_id), item_id)


@dramatiq.actor(
    queue_name=CALENDAR_QUEUE, actor_name=WATCH_ACTOR, max_retries=3, min_backoff=10_000, time_limit=2 * MINUTE_MS
)
async def watch_calendar(connection_id: str) -> None:
    _context("watch")
    await run_watch(UUID(connection_id))


@dramatiq.actor(
    queue_name=CALENDAR_QUEUE,
    actor_name=WRITE_BACK_ACTOR,
    max_retries=12,
    min_backoff=5_000,
    max_backoff=30 * MINUTE_MS,
    time_limit=2 * MINUTE_MS,
)
async def write_back_booking(tenant_id: str, booking_id: str) -> None:
    _context("write-back")
    for line in await write_back(UUID(tenant_id), UUID(booking_id)):
        log.debug("calendars.write_back_done", outcome=line)


@dramatiq.actor(queue_name=CALENDAR_QUEUE, actor_name=POLL_ACTOR, max_retries=0, time_limit=2 * MINUTE_MS)
async def calendar_poll_tick() -> None:
    _context("poll")
    await poll_tick()

"""Calendar work handed to the jobs process (Dramatiq, Postgres broker), by actor name.

The actors live in `jobs/calendars.py` (the jobs process's composition root); senders here need only
their names, so the web (a push notification, a connect) and the worker (the poll tick, write-back
subscribers) queue work without importing `jobs`. Sending is a short INSERT on the broker's own pool,
run in a thread: nothing waits on it but the caller.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import dramatiq

from nmc.queue.dramatiq import setup_broker

CALENDAR_QUEUE = "calendars"
SYNC_ACTOR = "calendars_sync"
WATCH_ACTOR = "calendars_watch"
WRITE_BACK_ACTOR = "calendars_write_back"
POLL_ACTOR = "calendars_poll_tick"
ITEM_ACTOR = "calendars_sync_item"


def send(actor_name: str, *args: Any, delay_ms: int | None = None, **kwargs: Any) -> None:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=CALENDAR_QUEUE, actor_name=actor_name, args=args, kwargs=kwargs, options={}
    )
    setup_broker().enqueue(message, delay=delay_ms)


async def send_async(actor_name: str, *args: Any, delay_ms: int | None = None, **kwargs: Any) -> None:
    await asyncio.to_thread(send, actor_name, *args, delay_ms=delay_ms, **kwargs)


async def queue_sync(
    connection_id: UUID, *, full: bool = False, forced: bool = False, delay_ms: int | None = None
) -> None:
    await send_async(SYNC_ACTOR, str(connection_id), full=full, forced=forced, delay_ms=delay_ms)


async def queue_item_sync(connection_id: UUID, item_id: str) -> None:
    """A webhook's item (a Jobber visit) re-queried and applied in the jobs process."""
    await send_async(ITEM_ACTOR, str(connection_id), item_id)


async def queue_watch(connection_id: UUID) -> None:
    await send_async(WATCH_ACTOR, str(connection_id))


async def queue_write_back(tenant_id: UUID, booking_id: UUID) -> None:
    await send_async(WRITE_BACK_ACTOR, str(tenant_id), str(booking_id))


async def queue_poll_tick() -> None:
    await send_async(POLL_ACTOR)

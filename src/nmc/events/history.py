"""The history of domain events the outbox still holds, for projections rebuilt from it.

Parked events (`outbox_events_errors`) are part of the history: what they record happened (a missed
call whose first SMS was refused is still a missed call).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg
import msgspec

from nmc.events.catalog import DomainEvent, load_event

_OLDEST = """
    SELECT min((payload->>'occurred_at')::timestamptz) FROM (
        SELECT payload FROM outbox_events WHERE event_name = ANY($1::text[])
        UNION ALL SELECT payload FROM outbox_events_errors WHERE event_name = ANY($1::text[])
    ) h
"""
_HISTORY = """
    SELECT event_name, event_version, payload, created_at FROM outbox_events WHERE event_name = ANY($1::text[])
    UNION ALL
    SELECT event_name, event_version, payload, created_at FROM outbox_events_errors WHERE event_name = ANY($1::text[])
    ORDER BY created_at
"""
BATCH = 1000


class Unreadable(msgspec.Struct, frozen=True):
    """A stored row that no longer fits the catalog."""

    event_name: str
    event_version: int


async def oldest_occurrence(connection: asyncpg.Connection, names: Sequence[str]) -> datetime | None:
    """When the oldest held event of these names occurred (None: the history holds none)."""
    oldest: datetime | None = await connection.fetchval(_OLDEST, list(names))
    return oldest


async def held_events(connection: asyncpg.Connection, names: Sequence[str]) -> AsyncIterator[DomainEvent | Unreadable]:
    """Every held event of these names, oldest first, validated against the catalog.

    Streams with a server-side cursor: `connection` must be in a transaction.
    """
    async for row in connection.cursor(_HISTORY, list(names), prefetch=BATCH):
        try:
            yield load_event(row["event_name"], row["event_version"], row["payload"])
        except (msgspec.ValidationError, ValueError):
            yield Unreadable(row["event_name"], row["event_version"])

"""The live re-check before a hold or booking (registered with scheduling by the composition roots).

For a resource with an active calendar connection, the slot is asked of the provider itself (Google:
freeBusy, then the events there, so our own written-back bookings do not count) within
`GOOGLE_FREEBUSY_TIMEOUT_SECONDS`. Busy: the events found are written as busy blocks at once (their own
short transaction, so fresh offers by SMS leave them out even though the refused booking is rolled
back), a sync is queued, and scheduling refuses the slot (409). No answer in time, or any failure: the
booking goes ahead on the synced state (fail open), logged and counted in
`calendar_freebusy_fail_open_total` — a broken calendar must not stop a business from taking bookings.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.calendars import store
from nmc.calendars.metrics import FREEBUSY_FAIL_OPEN, count
from nmc.calendars.models import Provider
from nmc.calendars.queueing import queue_sync
from nmc.calendars.service import BUSY_SOURCE, Tokens, masked, provider_for
from nmc.db import raw_connection, session_scope
from nmc.scheduling import ExternalBusy, LiveBusy, upsert_external_busy
from nmc.settings import get_settings

log = structlog.get_logger(module="calendars")

_ACTIVE = f"""
    SELECT c.id FROM calendar_connections c
    WHERE c.tenant_id = $1 AND c.resource_id = $2 AND c.status = 'active' AND c.provider = '{Provider.GOOGLE}'
"""


async def live_calendar_check(
    session: AsyncSession, tenant_id: UUID, resource_id: UUID, start: datetime, end: datetime
) -> LiveBusy | None:
    """Scheduling's `LiveBusyCheck`: the busy time in [start, end) on the resource's calendar, or None."""
    connection = await raw_connection(session)
    connection_id = await connection.fetchval(_ACTIVE, tenant_id, resource_id)
    if connection_id is None:
        return None
    row = await store.get(connection, connection_id)
    if row is None:
        return None
    settings = get_settings()
    timeout = settings.GOOGLE_FREEBUSY_TIMEOUT_SECONDS
    provider = provider_for(row.provider)
    zone = ZoneInfo(row.timezone)
    try:
        async with asyncio.timeout(timeout):
            tokens = Tokens(row)
            found = await tokens.call(lambda t: provider.busy(t, row.calendar_id, start, end, zone, timeout))
    except Exception as exc:  # a timeout, an error, a lost grant: the sync will say; the booking goes ahead
        log.warning(
            "calendars.live_check_fail_open",
            connection_id=str(row.id),
            error=masked(exc) if str(exc) else type(exc).__name__,
        )
        await _count_fail_open(row.provider)
        return None
    if not found:
        return None
    blocks = [ExternalBusy(c.external_id, c.start, c.end, c.title) for c in found if c.start and c.end]
    async with session_scope() as own:
        await upsert_external_busy(own, tenant_id, resource_id, BUSY_SOURCE[Provider(row.provider)], blocks)
    try:
        await queue_sync(row.id)
    except Exception as exc:  # the poll catches up anyway
        log.warning("calendars.queue_failed", connection_id=str(row.id), error=f"{type(exc).__name__}")
    first = min(blocks, key=lambda b: b.start)
    log.info("calendars.live_check_busy", connection_id=str(row.id), start=first.start.isoformat())
    return LiveBusy(start=first.start, end=first.end)


async def _count_fail_open(provider: str) -> None:
    try:
        await count(FREEBUSY_FAIL_OPEN, provider)
    except Exception as exc:
        log.warning("calendars.count_failed", error=type(exc).__name__)

"""Busy time that lives in another system (a Google calendar, Jobber), kept by whoever syncs it through
these functions — by source and external id, never by writing `sched_busy_blocks` itself — and the one
place scheduling asks that system before it promises a slot (the live busy check).

Blocks are written with one statement per call whatever their number (`unnest` of arrays): a full sync
of 5,000 events is one upsert and one delete, in the caller's transaction (a sync commits all of its
changes at once, or none).

The live busy check is dependency inversion: scheduling must not import the modules that know calendars
(they sit beside it), so a composition root registers a check at start (`register_live_busy_check`) and
scheduling calls it before a hold or a booking is written. A check answers the busy interval in the way,
or None; one that fails is logged and ignored (a broken calendar must not stop a business from booking).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import raw_connection
from nmc.scheduling.enums import BusyBlockSource

log = structlog.get_logger(module="scheduling")


@dataclass(frozen=True)
class ExternalBusy:
    """One block of busy time from another system, identified there by `external_id`."""

    external_id: str
    start: datetime
    end: datetime
    title: str | None = None


_UPSERT = """
    INSERT INTO sched_busy_blocks AS b (id, tenant_id, resource_id, during, title, source, external_id,
                                        created_at, updated_at)
    SELECT gen_random_uuid(), $1, $2, tstzrange(u.starts, u.ends, '[)'), u.title, $3, u.external_id, now(), now()
    FROM unnest($4::text[], $5::timestamptz[], $6::timestamptz[], $7::text[]) AS u(external_id, starts, ends, title)
    WHERE EXISTS (SELECT 1 FROM sched_resources r WHERE r.id = $2 AND r.tenant_id = $1)
    ON CONFLICT (resource_id, source, external_id) DO UPDATE
        SET during = EXCLUDED.during, title = EXCLUDED.title, updated_at = now()
        WHERE b.during IS DISTINCT FROM EXCLUDED.during OR b.title IS DISTINCT FROM EXCLUDED.title
"""
_DELETE = """
    DELETE FROM sched_busy_blocks
    WHERE tenant_id = $1 AND resource_id = $2 AND source = $3
      AND (external_id = ANY($4::text[]) OR external_id LIKE ANY($5::text[]))
"""
_DELETE_ALL_BUT = """
    DELETE FROM sched_busy_blocks
    WHERE tenant_id = $1 AND resource_id = $2 AND source = $3 AND NOT (external_id = ANY($4::text[]))
"""
_DELETE_ALL = "DELETE FROM sched_busy_blocks WHERE tenant_id = $1 AND resource_id = $2 AND source = $3"
_COUNT = "SELECT count(*) FROM sched_busy_blocks WHERE tenant_id = $1 AND resource_id = $2 AND source = $3"


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _columns(blocks: Sequence[ExternalBusy]) -> tuple[list[str], list[datetime], list[datetime], list[str | None]]:
    latest = {block.external_id: block for block in blocks}  # one row per id: the last word wins
    rows = [b for b in latest.values() if b.end > b.start]
    return (
        [b.external_id for b in rows],
        [b.start for b in rows],
        [b.end for b in rows],
        [b.title[:200] if b.title else None for b in rows],
    )


async def upsert_external_busy(
    session: AsyncSession,
    tenant_id: UUID,
    resource_id: UUID,
    source: BusyBlockSource,
    blocks: Sequence[ExternalBusy],
) -> int:
    """Create or move the blocks (by source + external id) of one of the tenant's resources; returns how
    many rows changed (unchanged blocks are not rewritten)."""
    if not blocks:
        return 0
    result = await (await raw_connection(session)).execute(
        _UPSERT, tenant_id, resource_id, BusyBlockSource(source), *_columns(blocks)
    )
    return int(result.split()[-1])


async def delete_external_busy(
    session: AsyncSession,
    tenant_id: UUID,
    resource_id: UUID,
    source: BusyBlockSource,
    external_ids: Sequence[str] = (),
    *,
    prefixes: Sequence[str] = (),
) -> int:
    """Delete blocks by external id, and every block whose id starts with one of `prefixes` (a recurring
    series' instances); returns how many went."""
    if not external_ids and not prefixes:
        return 0
    result = await (await raw_connection(session)).execute(
        _DELETE,
        tenant_id,
        resource_id,
        BusyBlockSource(source),
        list(external_ids),
        [_like_prefix(p) for p in prefixes],
    )
    return int(result.split()[-1])


async def replace_external_busy(
    session: AsyncSession,
    tenant_id: UUID,
    resource_id: UUID,
    source: BusyBlockSource,
    blocks: Sequence[ExternalBusy],
) -> tuple[int, int]:
    """Make the resource's blocks of `source` exactly `blocks` (a full sync); returns (changed, deleted)."""
    columns = _columns(blocks)
    connection = await raw_connection(session)
    deleted = await connection.execute(_DELETE_ALL_BUT, tenant_id, resource_id, BusyBlockSource(source), columns[0])
    changed = 0
    if columns[0]:
        changed = int(
            (await connection.execute(_UPSERT, tenant_id, resource_id, BusyBlockSource(source), *columns)).split()[-1]
        )
    return changed, int(deleted.split()[-1])


async def clear_external_busy(
    session: AsyncSession, tenant_id: UUID, resource_id: UUID, source: BusyBlockSource
) -> int:
    """Delete every block of `source` on the resource (a calendar disconnected or moved elsewhere)."""
    result = await (await raw_connection(session)).execute(_DELETE_ALL, tenant_id, resource_id, BusyBlockSource(source))
    return int(result.split()[-1])


async def count_external_busy(
    session: AsyncSession, tenant_id: UUID, resource_id: UUID, source: BusyBlockSource
) -> int:
    count: int = await (await raw_connection(session)).fetchval(_COUNT, tenant_id, resource_id, BusyBlockSource(source))
    return count


_RESOURCES = "SELECT id, name FROM sched_resources WHERE tenant_id = $1 AND id = ANY($2::uuid[])"


async def resource_names(session: AsyncSession, tenant_id: UUID, resource_ids: Sequence[UUID]) -> dict[UUID, str]:
    """The tenant's resources among `resource_ids`, by id (another tenant's are not there)."""
    if not resource_ids:
        return {}
    rows = await (await raw_connection(session)).fetch(_RESOURCES, tenant_id, list(resource_ids))
    return {row["id"]: row["name"] for row in rows}


# ---------------------------------------------------------------------------- the live busy check
@dataclass(frozen=True)
class LiveBusy:
    """Busy time another system reports in the way of a slot."""

    start: datetime
    end: datetime


# (session, tenant id, resource id, start, end) → the busy time in [start, end), or None when free/unknown.
LiveBusyCheck = Callable[[AsyncSession, UUID, UUID, datetime, datetime], Awaitable[LiveBusy | None]]
_live_checks: list[LiveBusyCheck] = []


def register_live_busy_check(check: LiveBusyCheck) -> None:
    """Called by a composition root at start (the web app, the worker): asked before every hold and booking."""
    if check not in _live_checks:
        _live_checks.append(check)


def unregister_live_busy_check(check: LiveBusyCheck) -> None:
    if check in _live_checks:
        _live_checks.remove(check)


async def live_busy(
    session: AsyncSession, tenant_id: UUID, resource_id: UUID, start: datetime, end: datetime
) -> LiveBusy | None:
    """What a registered check finds in the way of [start, end); a failing check counts as free (fail open)."""
    for check in _live_checks:
        try:
            found = await check(session, tenant_id, resource_id, start, end)
        except Exception as exc:
            log.warning(
                "scheduling.live_check_failed", error=f"{type(exc).__name__}: {exc}", resource_id=str(resource_id)
            )
            continue
        if found is not None:
            return found
    return None


_HELD_SLOT = """
    SELECT h.resource_id, lower(a.during) AS starts, upper(a.during) AS ends
    FROM sched_holds h JOIN sched_allocations a ON a.id = h.allocation_id
    WHERE h.id = $2 AND h.tenant_id = $1
"""


def live_checks_registered() -> bool:
    return bool(_live_checks)


async def live_busy_for_hold(session: AsyncSession, tenant_id: UUID, hold_id: UUID) -> LiveBusy | None:
    """The live check for the slot a hold keeps (buffers included), before it becomes a booking."""
    if not _live_checks:
        return None
    row = await (await raw_connection(session)).fetchrow(_HELD_SLOT, tenant_id, hold_id)
    if row is None:
        return None  # gone or expired: booking it answers why
    return await live_busy(session, tenant_id, row["resource_id"], row["starts"], row["ends"])

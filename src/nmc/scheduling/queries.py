"""The hand-written SQL of the hot path — availability, holds, bookings, the hold GC — and the typed
rows it returns.

Plain SQL on the session's own connection (`nmc.db.raw_connection`), not SQLAlchemy: booking POST
must stay under 20 ms at P95 with 50 racing clients and a 7-day availability search under 10 ms, and
statement building and ORM bookkeeping cost more there than the database round trips (benchmarked:
`just bench booking`). Everything else in scheduling goes through advanced-alchemy services
(`nmc.scheduling.service`). Each function runs its statement (cancelling: two) and turns the rows
into structs with `msgspec.convert`. Every statement is scoped by the caller's tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec

from nmc.db import json_column
from nmc.scheduling.availability import Interval, JobShape
from nmc.scheduling.enums import BookingSource, BookingStatus, ConflictKind
from nmc.scheduling.schemas import BookingRead, Conflict, HoldRead

# ---------------------------------------------------------------------------- availability
# Everything a search needs in one round trip, one row per active resource (or one row with no
# resource): the tenant's timezone (from identity's `tenant_profiles` view), the job type, each resource's
# hours with the exceptions of the local days the window touches, and what is taken — bookings and
# live holds (an expired hold is free whether or not the GC has run) and busy blocks, merged by
# Postgres (`range_agg`) over the window widened by the job's reach.
_SEARCH = """
    SELECT t.timezone, j.id AS job_type_id, j.duration_minutes, j.buffer_before_minutes,
           j.buffer_after_minutes, j.min_notice_minutes, r.id, r.name, r.weekly_hours,
           (SELECT coalesce(json_object_agg(e.day::text, e.hours), '{}')
              FROM sched_resource_exceptions e
             WHERE e.resource_id = r.id
               AND e.day BETWEEN ($3::timestamptz AT TIME ZONE t.timezone)::date - 1
                             AND ($4::timestamptz AT TIME ZONE t.timezone)::date) AS exceptions,
           (SELECT range_agg(taken.during) FROM (
                SELECT a.during FROM sched_allocations a
                WHERE a.tenant_id = t.id AND a.resource_id = r.id AND a.during && reach.span
                  AND (a.kind = 'booking' OR a.expires_at > now())
                UNION ALL
                SELECT b.during FROM sched_busy_blocks b
                WHERE b.tenant_id = t.id AND b.resource_id = r.id AND b.during && reach.span
           ) AS taken) AS busy
    FROM tenant_profiles t
    LEFT JOIN sched_job_types j ON j.id = $2 AND j.tenant_id = t.id AND j.active
    LEFT JOIN LATERAL (
        SELECT tstzrange($3::timestamptz - make_interval(mins => j.buffer_before_minutes),
                         $4::timestamptz + make_interval(mins => j.duration_minutes + j.buffer_after_minutes))
               AS span
    ) AS reach ON true
    LEFT JOIN sched_resources r
           ON r.tenant_id = t.id AND r.active AND ($5::uuid[] IS NULL OR r.id = ANY($5::uuid[]))
    WHERE t.id = $1
    ORDER BY r.name, r.id
"""


# ---------------------------------------------------------------------------- holds and bookings
# Writers that add or move an allocation take a transaction-scoped advisory lock on its resource
# first. The exclusion constraint alone is the guarantee; the lock only orders the writers of one
# resource. Without it two racing inserts can deadlock: each inserts its index entry, then waits for
# the other's transaction to see whether it conflicts (Postgres breaks the cycle after
# `deadlock_timeout`, a second of stall for both).
RESOURCE_LOCK_NAMESPACE = 0x5C4E

# What a hold or a direct booking needs to know in one round trip: the tenant's timezone, the
# resource's hours (with the exceptions of the local days around the start), the job type's shape,
# the first committed booking or live hold and the first busy block the blocked range would overlap,
# and the transaction's clock. A slot already taken is answered from here, without a write to roll
# back (most 409s when clients race); races between uncommitted writers are still the exclusion
# constraint's to decide. The tenant's zone comes from identity's `tenant_profiles` view, joined in
# (a round trip to the identity service would cost more than the rest of the query).
# Outer joins tell a missing resource from a missing job type.
_SLOT_CONTEXT = """
    SELECT now() AS db_now, t.timezone, r.id AS resource_id, r.active AS resource_active, r.weekly_hours,
           j.id AS job_type_id, j.active AS job_type_active, j.duration_minutes, j.buffer_before_minutes,
           j.buffer_after_minutes, j.min_notice_minutes,
           (SELECT coalesce(json_object_agg(e.day::text, e.hours), '{}')
              FROM sched_resource_exceptions e
             WHERE e.resource_id = r.id
               AND e.day BETWEEN ($4::timestamptz AT TIME ZONE t.timezone)::date - 1
                             AND ($4::timestamptz AT TIME ZONE t.timezone)::date + 2) AS exceptions,
           taken.taken_kind, taken.taken_start, taken.taken_end, busy.busy_start, busy.busy_end
    FROM tenant_profiles t
    LEFT JOIN sched_resources r ON r.id = $2 AND r.tenant_id = t.id
    LEFT JOIN sched_job_types j ON j.id = $3 AND j.tenant_id = t.id
    LEFT JOIN LATERAL (
        SELECT tstzrange(
            $4::timestamptz - make_interval(mins => j.buffer_before_minutes),
            $4::timestamptz + make_interval(mins => j.duration_minutes + j.buffer_after_minutes)) AS blocked
    ) AS slot ON true
    LEFT JOIN LATERAL (
        SELECT a.kind AS taken_kind, lower(a.during) AS taken_start, upper(a.during) AS taken_end
        FROM sched_allocations a
        WHERE a.resource_id = r.id AND a.during && slot.blocked AND (a.kind = 'booking' OR a.expires_at > now())
          AND a.id IS DISTINCT FROM $5::uuid  -- a booking being moved does not collide with itself
        ORDER BY lower(a.during)
        LIMIT 1
    ) AS taken ON true
    LEFT JOIN LATERAL (
        SELECT lower(b.during) AS busy_start, upper(b.during) AS busy_end
        FROM sched_busy_blocks b
        WHERE b.resource_id = r.id AND b.during && slot.blocked
        ORDER BY lower(b.during)
        LIMIT 1
    ) AS busy ON true
    WHERE t.id = $1
"""


# The start of every statement that adds or moves an allocation: the resource's lock (a volatile call
# in its own CTE is evaluated once, before the delete that reads it), then the expired holds
# overlapping the new range are deleted, and the insert or move waits for that delete (it reads its
# count): the exclusion constraint never sees them. The lock is taken here, in the writing statement,
# so it is held only from the write to the commit.
def _lock_and_purge(lock_parameter: int) -> str:
    return f"""
    locked AS (
        SELECT pg_advisory_xact_lock(${lock_parameter}, hashtext($3::uuid::text))
    ),
    purged AS (
        DELETE FROM sched_allocations
        WHERE (SELECT count(*) FROM locked) > 0
          AND resource_id = $3 AND kind = 'hold' AND expires_at <= now()
          AND during && tstzrange($5::timestamptz, $6::timestamptz)
        RETURNING id
    ),
    expired AS (
        SELECT h.id, h.tenant_id, h.resource_id, h.job_type_id, h.starts_at, h.ends_at, h.expires_at
        FROM sched_holds h JOIN purged ON h.allocation_id = purged.id
    )
"""


_EXPIRED_JSON = "(SELECT coalesce(json_agg(expired), '[]') FROM expired) AS expired_holds"

_INSERT_HOLD = f"""
    WITH {_lock_and_purge(13)},
    allocation AS (
        INSERT INTO sched_allocations (id, tenant_id, resource_id, during, kind, expires_at)
        SELECT $2, $1, $3, tstzrange($5::timestamptz, $6::timestamptz), 'hold', $7
        FROM (SELECT count(*) FROM purged) AS settled
        RETURNING id, expires_at
    ),
    hold AS (
        INSERT INTO sched_holds (id, tenant_id, resource_id, job_type_id, allocation_id, starts_at, ends_at,
                                 expires_at, customer_name, customer_phone)
        SELECT $8, $1, $3, $4, allocation.id, $9, $10, allocation.expires_at, $11, $12 FROM allocation
        RETURNING *
    )
    SELECT hold.*, {_EXPIRED_JSON} FROM hold
"""

_INSERT_BOOKING = f"""
    WITH {_lock_and_purge(14)},
    allocation AS (
        INSERT INTO sched_allocations (id, tenant_id, resource_id, during, kind)
        SELECT $2, $1, $3, tstzrange($5::timestamptz, $6::timestamptz), 'booking'
        FROM (SELECT count(*) FROM purged) AS settled
        RETURNING id
    ),
    booking AS (
        INSERT INTO sched_bookings (id, tenant_id, resource_id, job_type_id, allocation_id, starts_at, ends_at,
                                    status, source, customer_name, customer_phone, notes)
        SELECT $7, $1, $3, $4, allocation.id, $8, $9, 'confirmed', $10, $11, $12, $13 FROM allocation
        RETURNING *
    )
    SELECT booking.*, {_EXPIRED_JSON} FROM booking
"""

# A hold becomes a booking in place: its allocation turns into a booking's (same range, so no new
# conflict is possible), the hold row goes. An expired hold converts to nothing. The update re-checks
# the exclusion constraint, so it takes the resource's lock like an insert (`locked` holds a volatile
# call: it is evaluated once, before the delete that reads it).
_BOOK_HOLD = """
    WITH locked AS (
        SELECT pg_advisory_xact_lock($8, hashtext(resource_id::text))
        FROM sched_holds WHERE id = $2 AND tenant_id = $1
    ),
    hold AS (
        DELETE FROM sched_holds WHERE id = $2 AND tenant_id = $1 AND (SELECT count(*) FROM locked) > 0
        RETURNING *
    ),
    allocation AS (
        UPDATE sched_allocations a SET kind = 'booking', expires_at = NULL
        FROM hold
        WHERE a.id = hold.allocation_id AND a.kind = 'hold' AND a.expires_at > now()
        RETURNING a.id
    )
    INSERT INTO sched_bookings (id, tenant_id, resource_id, job_type_id, allocation_id, hold_id, starts_at, ends_at,
                                status, source, customer_name, customer_phone, notes)
    SELECT $3, hold.tenant_id, hold.resource_id, hold.job_type_id, allocation.id, hold.id, hold.starts_at,
           hold.ends_at, 'confirmed', $4, coalesce($5, hold.customer_name), coalesce($6, hold.customer_phone), $7
    FROM hold JOIN allocation ON allocation.id = hold.allocation_id
    RETURNING *
"""
_HOLD_STATE = "SELECT expires_at FROM sched_holds WHERE id = $2 AND tenant_id = $1"

_CONFLICT = """
    SELECT kind, lower(during) AS starts, upper(during) AS ends
    FROM sched_allocations
    WHERE resource_id = $1 AND during && tstzrange($2, $3) AND (kind = 'booking' OR expires_at > now())
    ORDER BY lower(during)
    LIMIT 1
"""

# The hold row first, as booking a hold does: a release and a booking of one hold queue on that row
# and the second finds nothing, instead of each locking what the other needs next.
_RELEASE_HOLD = """
    WITH hold AS (
        DELETE FROM sched_holds WHERE id = $2 AND tenant_id = $1 RETURNING allocation_id
    )
    DELETE FROM sched_allocations WHERE id IN (SELECT allocation_id FROM hold) AND kind = 'hold'
    RETURNING id
"""

_CANCEL = """
    WITH target AS (
        SELECT id, allocation_id FROM sched_bookings
        WHERE id = $2 AND tenant_id = $1 AND status = 'confirmed'
        FOR UPDATE
    ),
    cancelled AS (
        UPDATE sched_bookings b
        SET status = 'cancelled', allocation_id = NULL, cancelled_at = now(), cancel_reason = $3, updated_at = now()
        FROM target WHERE b.id = target.id
        RETURNING b.*, target.allocation_id AS released
    )
    SELECT * FROM cancelled
"""
_RELEASE_ALLOCATION = "DELETE FROM sched_allocations WHERE id = $1 AND kind = 'booking'"

_BOOKING_FOR_UPDATE = """
    SELECT * FROM sched_bookings WHERE id = $2 AND tenant_id = $1 FOR UPDATE
"""
# A move may touch two resources: their locks are taken in one order everywhere (sorted keys).
_LOCK_RESOURCES = """
    SELECT pg_advisory_xact_lock($1, key)
    FROM (SELECT DISTINCT hashtext(id::text) AS key FROM unnest($2::uuid[]) AS id ORDER BY key) AS keys
"""
_MOVE = f"""
    WITH {_lock_and_purge(9)},
    moved AS (
        UPDATE sched_allocations SET resource_id = $3, during = tstzrange($5::timestamptz, $6::timestamptz)
        FROM (SELECT count(*) FROM purged) AS settled
        WHERE id = $2 AND tenant_id = $1 AND kind = 'booking'
        RETURNING id
    ),
    booking AS (
        UPDATE sched_bookings SET resource_id = $3, starts_at = $7, ends_at = $8, updated_at = now()
        WHERE allocation_id = (SELECT id FROM moved) AND job_type_id = $4
        RETURNING *
    )
    SELECT booking.*, {_EXPIRED_JSON} FROM booking
"""

# A refused write (exclusion violation, deadlock) aborts what it ran in. It runs after a savepoint,
# and a refusal rolls back to that savepoint only: whatever the caller wrote or locked earlier in its
# transaction stays. One statement on the way in; no RELEASE on success (COMMIT releases it), and a
# retry reuses it (ROLLBACK TO keeps the savepoint).
_SAVEPOINT = "SAVEPOINT scheduling_write"
_ROLLBACK_TO_SAVEPOINT = "ROLLBACK TO SAVEPOINT scheduling_write"

# ---------------------------------------------------------------------------- hold GC
# Batches of expired hold allocations (SKIP LOCKED: a hold being booked right now is left alone; the
# re-checked kind/expiry make a concurrent conversion win). Hold rows go by cascade; the statement
# still sees them and returns what `hold.expired` needs.
_COLLECT_EXPIRED = """
    WITH gone AS (
        DELETE FROM sched_allocations
        WHERE id IN (
            SELECT id FROM sched_allocations
            WHERE kind = 'hold' AND expires_at <= now()
            ORDER BY expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ) AND kind = 'hold' AND expires_at <= now()
        RETURNING id
    )
    SELECT h.id, h.tenant_id, h.resource_id, h.job_type_id, h.starts_at, h.ends_at, h.expires_at
    FROM gone JOIN sched_holds h ON h.allocation_id = gone.id
"""


# ---------------------------------------------------------------------------- rows
class JobColumns(msgspec.Struct):
    """A job type's shape, as the search and the slot context return it."""

    duration_minutes: int
    buffer_before_minutes: int
    buffer_after_minutes: int
    min_notice_minutes: int

    def shape(self) -> JobShape:
        return JobShape(
            duration=timedelta(minutes=self.duration_minutes),
            buffer_before=timedelta(minutes=self.buffer_before_minutes),
            buffer_after=timedelta(minutes=self.buffer_after_minutes),
        )


class ResourceHours(msgspec.Struct):
    """One resource of a search: its hours (JSON), the window's exceptions (JSON) and what is taken."""

    id: UUID
    name: str
    weekly_hours: Any
    exceptions: Any
    busy: list[Any] | None  # asyncpg Ranges, merged (range_agg)


class SearchContext(msgspec.Struct):
    timezone: str
    job: JobColumns | None  # None: no such active job type
    resources: list[ResourceHours]


class SlotContext(msgspec.Struct):
    """`_SLOT_CONTEXT`'s row: None for a missing resource or job type, or for nothing taken."""

    db_now: datetime
    timezone: str
    resource_id: UUID | None
    resource_active: bool | None
    weekly_hours: Any
    job_type_id: UUID | None
    job_type_active: bool | None
    exceptions: Any
    taken_kind: ConflictKind | None
    taken_start: datetime | None
    taken_end: datetime | None
    busy_start: datetime | None
    busy_end: datetime | None
    job: JobColumns | None = None

    def taken(self) -> Conflict | None:
        """The first booking or live hold committed in the way, else the first busy block."""
        if self.taken_kind is not None and self.taken_start is not None and self.taken_end is not None:
            return Conflict(kind=self.taken_kind, start=self.taken_start, end=self.taken_end)
        if self.busy_start is not None and self.busy_end is not None:
            return Conflict(kind=ConflictKind.BUSY_BLOCK, start=self.busy_start, end=self.busy_end)
        return None


class ExpiredHold(msgspec.Struct):
    """A hold deleted because it expired (by the GC, or by a writer that needed its slot)."""

    id: UUID
    tenant_id: UUID
    resource_id: UUID
    job_type_id: UUID
    starts_at: datetime
    ends_at: datetime
    expires_at: datetime


class HoldRow(msgspec.Struct):
    id: UUID
    resource_id: UUID
    job_type_id: UUID
    starts_at: datetime
    ends_at: datetime
    expires_at: datetime
    customer_name: str | None
    customer_phone: str | None

    def read(self) -> HoldRead:
        return HoldRead(
            id=self.id,
            resource_id=self.resource_id,
            job_type_id=self.job_type_id,
            start=self.starts_at,
            end=self.ends_at,
            expires_at=self.expires_at,
            customer_name=self.customer_name,
            customer_phone=self.customer_phone,
        )


class BookingRow(msgspec.Struct):
    """A `sched_bookings` row (from SQL, or from the ORM model with `from_attributes`)."""

    id: UUID
    resource_id: UUID
    job_type_id: UUID
    hold_id: UUID | None
    starts_at: datetime
    ends_at: datetime
    status: BookingStatus
    source: BookingSource
    customer_name: str | None
    customer_phone: str | None
    notes: str | None
    created_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None
    allocation_id: UUID | None = None

    def read(self) -> BookingRead:
        return BookingRead(
            id=self.id,
            resource_id=self.resource_id,
            job_type_id=self.job_type_id,
            start=self.starts_at,
            end=self.ends_at,
            status=self.status,
            source=self.source,
            hold_id=self.hold_id,
            customer_name=self.customer_name,
            customer_phone=self.customer_phone,
            notes=self.notes,
            created_at=self.created_at,
            cancelled_at=self.cancelled_at,
            cancel_reason=self.cancel_reason,
        )


class CancelledRow(BookingRow):
    released: UUID | None = None  # the allocation the cancellation let go of


def _expired(row: asyncpg.Record) -> list[ExpiredHold]:
    return msgspec.convert(json_column(row["expired_holds"]), list[ExpiredHold])


# ---------------------------------------------------------------------------- statements
async def search(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    job_type_id: UUID,
    start: datetime,
    end: datetime,
    resource_ids: list[UUID] | None,
) -> SearchContext:
    rows = [dict(row) for row in await connection.fetch(_SEARCH, tenant_id, job_type_id, start, end, resource_ids)]
    first = rows[0]  # the caller's own tenant: at least one row
    return SearchContext(
        timezone=first["timezone"],
        job=msgspec.convert(first, JobColumns) if first["job_type_id"] is not None else None,
        resources=[msgspec.convert(row, ResourceHours) for row in rows if row["id"] is not None],
    )


async def slot_context(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    resource_id: UUID,
    job_type_id: UUID,
    start: datetime,
    moving: UUID | None,
) -> SlotContext:
    found = await connection.fetchrow(_SLOT_CONTEXT, tenant_id, resource_id, job_type_id, start, moving)
    assert found is not None  # the caller's own tenant
    row = dict(found)
    context = msgspec.convert(row, SlotContext)
    if context.job_type_id is not None:
        context.job = msgspec.convert(row, JobColumns)
    return context


async def savepoint(connection: asyncpg.Connection) -> None:
    await connection.execute(_SAVEPOINT)


async def rollback_to_savepoint(connection: asyncpg.Connection) -> None:
    await connection.execute(_ROLLBACK_TO_SAVEPOINT)


async def insert_hold(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    *,
    resource_id: UUID,
    job_type_id: UUID,
    blocked: Interval,
    start: datetime,
    end: datetime,
    expires_at: datetime,
    hold_id: UUID,
    customer_name: str | None,
    customer_phone: str | None,
) -> tuple[HoldRow, list[ExpiredHold]]:
    """The hold and its allocation, after purging the expired holds in the way (returned)."""
    row = await connection.fetchrow(
        _INSERT_HOLD,
        tenant_id,
        uuid4(),
        resource_id,
        job_type_id,
        *blocked,
        expires_at,
        hold_id,
        start,
        end,
        customer_name,
        customer_phone,
        RESOURCE_LOCK_NAMESPACE,
    )
    assert row is not None  # the insert returns its row or raises
    return msgspec.convert(dict(row), HoldRow), _expired(row)


async def insert_booking(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    *,
    resource_id: UUID,
    job_type_id: UUID,
    blocked: Interval,
    start: datetime,
    end: datetime,
    booking_id: UUID,
    source: BookingSource,
    customer_name: str | None,
    customer_phone: str | None,
    notes: str | None,
) -> tuple[BookingRow, list[ExpiredHold]]:
    """The booking and its allocation, after purging the expired holds in the way (returned)."""
    row = await connection.fetchrow(
        _INSERT_BOOKING,
        tenant_id,
        uuid4(),
        resource_id,
        job_type_id,
        *blocked,
        booking_id,
        start,
        end,
        source,
        customer_name,
        customer_phone,
        notes,
        RESOURCE_LOCK_NAMESPACE,
    )
    assert row is not None  # the insert returns its row or raises
    return msgspec.convert(dict(row), BookingRow), _expired(row)


async def book_hold(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    hold_id: UUID,
    *,
    booking_id: UUID,
    source: BookingSource,
    customer_name: str | None,
    customer_phone: str | None,
    notes: str | None,
) -> BookingRow | None:
    """The hold turned into a booking in place; None when it is gone or expired (the statement may
    then have deleted the expired hold's row: roll back to the savepoint)."""
    row = await connection.fetchrow(
        _BOOK_HOLD,
        tenant_id,
        hold_id,
        booking_id,
        source,
        customer_name,
        customer_phone,
        notes,
        RESOURCE_LOCK_NAMESPACE,
    )
    return None if row is None else msgspec.convert(dict(row), BookingRow)


async def hold_expires_at(connection: asyncpg.Connection, tenant_id: UUID, hold_id: UUID) -> datetime | None:
    expires_at: datetime | None = await connection.fetchval(_HOLD_STATE, tenant_id, hold_id)
    return expires_at


async def conflict(connection: asyncpg.Connection, resource_id: UUID, blocked: Interval) -> Conflict | None:
    """The first booking or live hold overlapping `blocked` (committed, or written by this transaction)."""
    row = await connection.fetchrow(_CONFLICT, resource_id, *blocked)
    if row is None:
        return None
    return Conflict(kind=ConflictKind(row["kind"]), start=row["starts"], end=row["ends"])


async def release_hold(connection: asyncpg.Connection, tenant_id: UUID, hold_id: UUID) -> bool:
    """Delete the hold and its allocation; False when there was no such hold."""
    return await connection.fetchval(_RELEASE_HOLD, tenant_id, hold_id) is not None


async def cancel(
    connection: asyncpg.Connection, tenant_id: UUID, booking_id: UUID, reason: str | None
) -> CancelledRow | None:
    """Cancel a confirmed booking and release its allocation; None when it is not a confirmed booking."""
    row = await connection.fetchrow(_CANCEL, tenant_id, booking_id, reason)
    if row is None:
        return None
    cancelled = msgspec.convert(dict(row), CancelledRow)
    await connection.execute(_RELEASE_ALLOCATION, cancelled.released)
    return cancelled


async def booking_for_update(connection: asyncpg.Connection, tenant_id: UUID, booking_id: UUID) -> BookingRow | None:
    row = await connection.fetchrow(_BOOKING_FOR_UPDATE, tenant_id, booking_id)
    return None if row is None else msgspec.convert(dict(row), BookingRow)


async def lock_resources(connection: asyncpg.Connection, resource_ids: Sequence[UUID]) -> None:
    await connection.execute(_LOCK_RESOURCES, RESOURCE_LOCK_NAMESPACE, list(resource_ids))


async def move(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    *,
    allocation_id: UUID | None,
    resource_id: UUID,
    job_type_id: UUID,
    blocked: Interval,
    start: datetime,
    end: datetime,
) -> tuple[BookingRow, list[ExpiredHold]] | None:
    """Move a booking's allocation (and the booking); None when it was cancelled meanwhile."""
    row = await connection.fetchrow(
        _MOVE,
        tenant_id,
        allocation_id,
        resource_id,
        job_type_id,
        *blocked,
        start,
        end,
        RESOURCE_LOCK_NAMESPACE,
    )
    return None if row is None else (msgspec.convert(dict(row), BookingRow), _expired(row))


async def collect_expired(connection: asyncpg.Connection, batch_size: int) -> list[ExpiredHold]:
    return [msgspec.convert(dict(row), ExpiredHold) for row in await connection.fetch(_COLLECT_EXPIRED, batch_size)]

"""Availability, holds and bookings: the hot path, and where no double booking is decided.

Holds and bookings are written with a few plain SQL statements on the session's own connection
(`nmc.scheduling.queries`): booking POST must stay under 20 ms at P95 with 50 racing clients, and
SQLAlchemy's statement building and ORM bookkeeping cost more there than the database round trips.
The database decides every race: the exclusion constraint on `sched_allocations` (see
`nmc.scheduling.models`) refuses an overlapping insert, and the loser gets a 409 naming what it
collided with. Every statement is scoped by the caller's tenant.

These functions run in the caller's transaction and never end it: a refused write is rolled back to
a savepoint taken just before it, so whatever the caller wrote or locked first (the SMS booking
dialog locks its dialog row) is still there, and the caller decides whether to commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import json_column, raw_connection, session_scope
from nmc.events import (
    BookingCancelled,
    BookingConfirmed,
    BookingHeld,
    BookingRescheduled,
    DomainEvent,
    HoldExpired,
    publish,
)
from nmc.observability.correlation import current_correlation_id
from nmc.observability.metrics import SCHEDULING_BOOK_CONFLICTS
from nmc.problems import InvalidField, NotFound, check_moment
from nmc.scheduling import queries
from nmc.scheduling.availability import (
    BusyIndex,
    Interval,
    local_days,
    open_starts,
    within_working_hours,
    working_intervals,
)
from nmc.scheduling.enums import BookingSource, BookingStatus, ConflictKind
from nmc.scheduling.errors import HoldExpiredError, NotConfirmed, SlotTaken
from nmc.scheduling.external_busy import LiveBusy, live_busy, live_busy_for_hold
from nmc.scheduling.queries import ExpiredHold
from nmc.scheduling.schemas import (
    AvailabilityRead,
    BookingCancel,
    BookingCreate,
    BookingRead,
    BookingReschedule,
    Conflict,
    HoldCreate,
    HoldRead,
    ResourceSlots,
    Slot,
)
from nmc.scheduling.service import BookingService, exceptions_by_day
from nmc.settings import Settings, get_settings

MAX_SEARCH_DAYS = 31
COLLECT_BATCH = 500

T = TypeVar("T")


# ---------------------------------------------------------------------------- availability
async def search_availability(
    session: AsyncSession,
    tenant_id: UUID,
    *,
    job_type_id: UUID,
    start: datetime,
    end: datetime,
    resource_ids: Sequence[UUID] | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> AvailabilityRead:
    """Open starts on the tenant's active resources (or the ones named) for one job type."""
    settings = settings or get_settings()
    check_moment(start, "start")
    check_moment(end, "end")
    if end <= start:
        raise InvalidField("end", "must be after start")
    if end - start > timedelta(days=MAX_SEARCH_DAYS):
        raise InvalidField("end", f"a search spans at most {MAX_SEARCH_DAYS} days")
    wanted = list(dict.fromkeys(resource_ids)) if resource_ids else None
    context = await queries.search(await raw_connection(session), tenant_id, job_type_id, start, end, wanted)
    if context.job is None:
        raise InvalidField("job_type_id", "no such active job type")
    if wanted is not None and len(context.resources) != len(wanted):
        raise InvalidField("resource_id", "no such active resource")
    zone = ZoneInfo(context.timezone)
    shape = context.job.shape()
    first_day, last_day = local_days(start, end, zone)
    earliest = (now or datetime.now(UTC)) + timedelta(minutes=context.job.min_notice_minutes)
    found = []
    for resource in context.resources:
        working = working_intervals(
            json_column(resource.weekly_hours), exceptions_by_day(resource.exceptions), zone, first_day, last_day
        )
        starts = open_starts(
            working=working,
            busy=BusyIndex((taken.lower, taken.upper) for taken in resource.busy or ()),
            shape=shape,
            window_start=start,
            window_end=end,
            earliest=earliest,
            zone=zone,
            granularity_minutes=settings.SEARCH_GRANULARITY_MINUTES,
        )
        slots = [Slot(start=s.astimezone(zone), end=(s + shape.duration).astimezone(zone)) for s in starts]
        found.append(ResourceSlots(resource_id=resource.id, name=resource.name, slots=slots))
    return AvailabilityRead(
        job_type_id=job_type_id,
        timezone=zone.key,
        start=start.astimezone(zone),
        end=end.astimezone(zone),
        granularity_minutes=settings.SEARCH_GRANULARITY_MINUTES,
        duration_minutes=context.job.duration_minutes,
        resources=found,
    )


# ---------------------------------------------------------------------------- holds and bookings
@dataclass(frozen=True)
class Slotting:
    """A validated slot: where, what, when, and the range it blocks."""

    resource_id: UUID
    job_type_id: UUID
    start: datetime
    end: datetime
    blocked: Interval
    db_now: datetime  # the transaction's `now()`


async def _validated_slot(
    session: AsyncSession,
    tenant_id: UUID,
    resource_id: UUID,
    job_type_id: UUID,
    start: datetime,
    now: datetime | None = None,
    moving: UUID | None = None,
) -> Slotting:
    """The slot, checked against the resource's hours, the minimum notice, busy blocks, and the
    bookings and live holds committed so far (`moving`: an allocation to leave out, a booking's own).

    That last check only answers the common 409 early; the write's exclusion constraint decides.
    """
    check_moment(start, "start")
    connection = await raw_connection(session)
    context = await queries.slot_context(connection, tenant_id, resource_id, job_type_id, start, moving)
    zone = ZoneInfo(context.timezone)
    if context.resource_id is None or not context.resource_active:
        raise InvalidField("resource_id", "no such active resource")
    if context.job is None or not context.job_type_active:
        raise InvalidField("job_type_id", "no such active job type")
    shape = context.job.shape()
    end = start + shape.duration
    earliest = (now or datetime.now(UTC)) + timedelta(minutes=context.job.min_notice_minutes)
    if start < earliest:
        raise InvalidField("start", f"must be at least {context.job.min_notice_minutes} minutes from now")
    first_day, last_day = local_days(start, end, zone)
    working = working_intervals(
        json_column(context.weekly_hours), exceptions_by_day(context.exceptions), zone, first_day, last_day
    )
    if not within_working_hours(working, start, end):
        raise InvalidField("start", "outside the resource's working hours")
    taken = context.taken()
    if taken is not None:
        SCHEDULING_BOOK_CONFLICTS.inc()
        raise SlotTaken(taken)
    blocked = shape.blocked(start)
    _refuse_live_busy(await live_busy(session, tenant_id, resource_id, *blocked))
    return Slotting(resource_id, job_type_id, start, end, shape.blocked(start), context.db_now)


async def _write_or_conflict(
    session: AsyncSession,
    write: Callable[[asyncpg.Connection], Awaitable[T]],
    resource_id: UUID,
    blocked: Interval,
    *,
    events: Sequence[DomainEvent] = (),
) -> T:
    """Run an allocating write; on an exclusion violation, answer with what it collided with.

    `events` are published first, so the resource's lock (taken by the write) is held only for the
    write and the commit. Both run after a savepoint: a violation aborts them, and they are rolled
    back to it — the events with the write, whatever the caller did before kept, its locks included —
    and the conflict is read in the same transaction. If that conflict is gone already (cancelled
    meanwhile), the events and the write are tried once more. Writers that lock their resources
    cannot deadlock each other; a deadlock with something else (the hold GC) is retried the same way.
    """
    connection = await raw_connection(session)
    await queries.savepoint(connection)
    for attempt in (1, 2):
        for event in events:
            await publish(session, event)
        try:
            return await write(connection)
        except asyncpg.DeadlockDetectedError:
            await queries.rollback_to_savepoint(connection)
            if attempt == 1:
                continue
            raise
        except asyncpg.ExclusionViolationError:
            await queries.rollback_to_savepoint(connection)
            found = await queries.conflict(connection, resource_id, blocked)
            if found is None and attempt == 1:
                continue
            SCHEDULING_BOOK_CONFLICTS.inc()
            raise SlotTaken(found) from None
    raise AssertionError("unreachable")


async def _publish_expired(session: AsyncSession, expired: Sequence[ExpiredHold]) -> None:
    """Holds a writer deleted because it needed their (expired) slot: `hold.expired`, as the GC says it."""
    for hold in expired:
        await publish(session, _hold_expired(hold))


def _refuse_live_busy(busy: LiveBusy | None) -> None:
    """The resource's own calendar (asked live by a registered check) has the slot taken: a 409 naming it."""
    if busy is not None:
        SCHEDULING_BOOK_CONFLICTS.inc()
        raise SlotTaken(Conflict(kind=ConflictKind.BUSY_BLOCK, start=busy.start, end=busy.end))


def _hold_expired(hold: ExpiredHold) -> HoldExpired:
    return HoldExpired(
        tenant_id=hold.tenant_id,
        hold_id=hold.id,
        resource_id=hold.resource_id,
        job_type_id=hold.job_type_id,
        starts_at=hold.starts_at,
        ends_at=hold.ends_at,
        expires_at=hold.expires_at,
        correlation_id=current_correlation_id(),
    )


async def create_hold(
    session: AsyncSession, tenant_id: UUID, data: HoldCreate, settings: Settings | None = None
) -> HoldRead:
    """Hold a slot for `HOLD_TTL_MINUTES`: 201, or `SlotTaken` (409) naming what it overlaps."""
    settings = settings or get_settings()
    slot = await _validated_slot(session, tenant_id, data.resource_id, data.job_type_id, data.start)
    hold_id = uuid4()
    expires_at = slot.db_now + timedelta(minutes=settings.HOLD_TTL_MINUTES)
    held = BookingHeld(
        tenant_id=tenant_id,
        hold_id=hold_id,
        resource_id=slot.resource_id,
        job_type_id=slot.job_type_id,
        starts_at=slot.start,
        ends_at=slot.end,
        expires_at=expires_at,
        correlation_id=current_correlation_id(),
    )
    hold, expired = await _write_or_conflict(
        session,
        lambda connection: queries.insert_hold(
            connection,
            tenant_id,
            resource_id=slot.resource_id,
            job_type_id=slot.job_type_id,
            blocked=slot.blocked,
            start=slot.start,
            end=slot.end,
            expires_at=expires_at,
            hold_id=hold_id,
            customer_name=data.customer_name,
            customer_phone=data.customer_phone,
        ),
        slot.resource_id,
        slot.blocked,
        events=[held],
    )
    await _publish_expired(session, expired)
    return hold.read()


async def release_hold(session: AsyncSession, tenant_id: UUID, hold_id: UUID) -> None:
    """Give a held slot back: the hold row, then its allocation."""
    if not await queries.release_hold(await raw_connection(session), tenant_id, hold_id):
        raise NotFound("hold")


async def create_booking(
    session: AsyncSession,
    tenant_id: UUID,
    data: BookingCreate,
    *,
    source: BookingSource = BookingSource.API,
) -> BookingRead:
    """Book a held slot (`hold_id`) or a slot directly (`resource_id` + `job_type_id` + `start`)."""
    source = BookingSource(source)
    if data.hold_id is not None:
        if data.resource_id is not None or data.job_type_id is not None or data.start is not None:
            raise InvalidField("hold_id", "give either hold_id or resource_id + job_type_id + start, not both")
        _refuse_live_busy(await live_busy_for_hold(session, tenant_id, data.hold_id))
        booking = (await _book_hold(session, tenant_id, data.hold_id, data, source)).read()
        await publish(session, _confirmed(tenant_id, booking))
        return booking
    for name in ("resource_id", "job_type_id", "start"):
        if getattr(data, name) is None:
            raise InvalidField(name, "required when booking without hold_id")
    assert data.resource_id is not None
    assert data.job_type_id is not None
    assert data.start is not None
    slot = await _validated_slot(session, tenant_id, data.resource_id, data.job_type_id, data.start)
    booking_id = uuid4()
    confirmed = BookingConfirmed(
        tenant_id=tenant_id,
        booking_id=booking_id,
        resource_id=slot.resource_id,
        job_type_id=slot.job_type_id,
        starts_at=slot.start,
        ends_at=slot.end,
        source=source,
        customer_phone=data.customer_phone,
        correlation_id=current_correlation_id(),
    )
    row, expired = await _write_or_conflict(
        session,
        lambda connection: queries.insert_booking(
            connection,
            tenant_id,
            resource_id=slot.resource_id,
            job_type_id=slot.job_type_id,
            blocked=slot.blocked,
            start=slot.start,
            end=slot.end,
            booking_id=booking_id,
            source=source,
            customer_name=data.customer_name,
            customer_phone=data.customer_phone,
            notes=data.notes,
        ),
        slot.resource_id,
        slot.blocked,
        events=[confirmed],
    )
    await _publish_expired(session, expired)
    return row.read()


def _confirmed(tenant_id: UUID, booking: BookingRead) -> BookingConfirmed:
    return BookingConfirmed(
        tenant_id=tenant_id,
        booking_id=booking.id,
        resource_id=booking.resource_id,
        job_type_id=booking.job_type_id,
        starts_at=booking.start,
        ends_at=booking.end,
        source=booking.source,
        hold_id=booking.hold_id,
        customer_phone=booking.customer_phone,
        correlation_id=current_correlation_id(),
    )


async def _book_hold(
    session: AsyncSession, tenant_id: UUID, hold_id: UUID, data: BookingCreate, source: BookingSource
) -> queries.BookingRow:
    """The hold turned into a booking, after a savepoint: a hold that expired is refused, and the
    statement's deletion of its row is rolled back to the savepoint (the caller's writes stay)."""
    connection = await raw_connection(session)
    booking_id = uuid4()
    await queries.savepoint(connection)
    for attempt in (1, 2):
        try:
            booked = await queries.book_hold(
                connection,
                tenant_id,
                hold_id,
                booking_id=booking_id,
                source=source,
                customer_name=data.customer_name,
                customer_phone=data.customer_phone,
                notes=data.notes,
            )
        except asyncpg.DeadlockDetectedError:  # with the hold GC, at the very instant the hold expires
            await queries.rollback_to_savepoint(connection)
            if attempt == 1:
                continue
            booked = None
        if booked is not None:
            return booked
        break
    await queries.rollback_to_savepoint(connection)  # the statement may have deleted the (expired) hold row
    if await queries.hold_expires_at(connection, tenant_id, hold_id) is not None:
        SCHEDULING_BOOK_CONFLICTS.inc()
        raise HoldExpiredError()
    raise NotFound("hold (it may have expired and been released)")


async def cancel_booking(
    session: AsyncSession, tenant_id: UUID, booking_id: UUID, data: BookingCancel | None = None
) -> BookingRead:
    """Cancel and free the slot. Cancelling a cancelled booking changes nothing (and says so again)."""
    cancelled = await queries.cancel(
        await raw_connection(session), tenant_id, booking_id, data.reason if data else None
    )
    if cancelled is None:
        return await get_booking(session, tenant_id, booking_id)
    booking = cancelled.read()
    await publish(
        session,
        BookingCancelled(
            tenant_id=tenant_id,
            booking_id=booking.id,
            resource_id=booking.resource_id,
            starts_at=booking.start,
            ends_at=booking.end,
            reason=booking.cancel_reason,
            correlation_id=current_correlation_id(),
        ),
    )
    return booking


async def reschedule_booking(
    session: AsyncSession, tenant_id: UUID, booking_id: UUID, data: BookingReschedule
) -> BookingRead:
    """Move a confirmed booking (time and/or resource); the exclusion constraint judges the new range.

    The booking's row lock and its resources' locks (one order everywhere: sorted keys) are taken
    before the move's savepoint, so a refused or retried move keeps them.
    """
    connection = await raw_connection(session)
    current = await queries.booking_for_update(connection, tenant_id, booking_id)
    if current is None:
        raise NotFound("booking")
    if current.status != BookingStatus.CONFIRMED:
        raise NotConfirmed()
    resource_id = data.resource_id or current.resource_id
    await queries.lock_resources(connection, [current.resource_id, resource_id])
    slot = await _validated_slot(
        session, tenant_id, resource_id, current.job_type_id, data.start, moving=current.allocation_id
    )
    moved = await _write_or_conflict(
        session,
        lambda connection: queries.move(
            connection,
            tenant_id,
            allocation_id=current.allocation_id,
            resource_id=resource_id,
            job_type_id=current.job_type_id,
            blocked=slot.blocked,
            start=slot.start,
            end=slot.end,
        ),
        resource_id,
        slot.blocked,
    )
    if moved is None:  # no longer a confirmed booking with that allocation
        raise NotConfirmed()
    row, expired = moved
    await _publish_expired(session, expired)
    booking = row.read()
    await publish(
        session,
        BookingRescheduled(
            tenant_id=tenant_id,
            booking_id=booking.id,
            resource_id=booking.resource_id,
            starts_at=booking.start,
            ends_at=booking.end,
            previous_resource_id=current.resource_id,
            previous_starts_at=current.starts_at,
            previous_ends_at=current.ends_at,
            correlation_id=current_correlation_id(),
        ),
    )
    return booking


async def get_booking(session: AsyncSession, tenant_id: UUID, booking_id: UUID) -> BookingRead:
    service = BookingService(session=session)
    return service.to_read(await service.get_for(tenant_id, booking_id))


async def list_bookings(
    session: AsyncSession,
    tenant_id: UUID,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    resource_id: UUID | None = None,
    status: BookingStatus | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[BookingRead]:
    """The tenant's bookings by start time; `start`/`end` keep the ones overlapping that window."""
    service = BookingService(session=session)
    found = await service.list_for(
        tenant_id, start=start, end=end, resource_id=resource_id, status=status, limit=limit, offset=offset
    )
    return [service.to_read(booking) for booking in found]


# ---------------------------------------------------------------------------- hold GC
async def collect_expired_holds(batch_size: int = COLLECT_BATCH) -> int:
    """Delete every expired hold (runbook §1 hold GC) and publish `hold.expired` for each."""
    collected = 0
    while True:
        try:
            async with session_scope() as session:
                expired = await queries.collect_expired(await raw_connection(session), batch_size)
                for hold in expired:
                    await publish(session, _hold_expired(hold))
        except asyncpg.DeadlockDetectedError:
            continue  # with a booking of a hold at its expiry instant: that batch again
        collected += len(expired)
        if len(expired) < batch_size:
            return collected

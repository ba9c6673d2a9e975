"""Scheduling's catalog: resources (weekly hours, date exceptions), job types, busy blocks; the
errors and validation the whole module shares. Every query is scoped by the caller's tenant.

Availability, holds and bookings — the hot path — live in `nmc.scheduling.booking`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, cast
from uuid import UUID

import msgspec
from advanced_alchemy.exceptions import ForeignKeyError, IntegrityError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar.exceptions import ClientException
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from nmc import weekly_hours
from nmc.db import json_column, raw_connection
from nmc.scheduling.models import DEFAULT_WEEKLY_HOURS, Booking, BusyBlock, JobType, Resource, ResourceException
from nmc.scheduling.schemas import (
    BusyBlockCreate,
    BusyBlockRead,
    BusyBlockUpdate,
    Conflict,
    DateException,
    JobTypeCreate,
    JobTypeRead,
    JobTypeUpdate,
    ResourceCreate,
    ResourceRead,
    ResourceUpdate,
)
from nmc.weekly_hours import WEEKDAYS

RESOURCE_NAME_UNIQUE = "uq_sched_resources_tenant_name"
JOB_TYPE_NAME_UNIQUE = "uq_sched_job_types_tenant_name"
BUSY_BLOCK_EXTERNAL_UNIQUE = "uq_sched_busy_blocks_external"


# ---------------------------------------------------------------------------- errors
class SchedulingError(ClientException):
    """A request scheduling refuses, rendered as RFC 9457 problem details (`scheduling_problem`).

    An HTTP client error, not a bare exception: a refused slot is an expected answer, and the app
    logs other exceptions as unexpected errors, traceback and all — on the hot path, too.
    """

    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)

    def problem_extra(self) -> dict[str, Any]:
        return {}


class NotFound(SchedulingError):
    status_code = 404
    title = "Not found"

    def __init__(self, what: str) -> None:
        super().__init__(f"No such {what}")


class InvalidField(SchedulingError):
    """A field the caller sent cannot be used; `field` names it."""

    status_code = 422
    title = "Invalid field"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def problem_extra(self) -> dict[str, Any]:
        return {"field": self.field}


class SlotTaken(SchedulingError):
    """The database refused the slot: it overlaps a booking, a live hold or a busy block."""

    status_code = 409
    title = "Slot taken"

    def __init__(self, conflict: Conflict | None) -> None:
        what = (
            f"a {conflict.kind.replace('_', ' ')} ({conflict.start.isoformat()} to {conflict.end.isoformat()})"
            if conflict
            else "another booking or hold"
        )
        super().__init__(f"The slot overlaps {what}")
        self.conflict = conflict

    def problem_extra(self) -> dict[str, Any]:
        return {"conflict": msgspec.to_builtins(self.conflict)} if self.conflict else {}


class HoldExpiredError(SchedulingError):
    status_code = 409
    title = "Hold expired"

    def __init__(self) -> None:
        super().__init__("The hold expired before it was booked; hold the slot again")


class NotConfirmed(SchedulingError):
    status_code = 409
    title = "Booking cancelled"

    def __init__(self) -> None:
        super().__init__("A cancelled booking cannot be rescheduled")


class NameTaken(SchedulingError):
    status_code = 409
    title = "Name taken"

    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"A {what} named {name!r} exists already")

    def problem_extra(self) -> dict[str, Any]:
        return {"field": "name"}


@contextmanager
def unique_name(what: str, name: str, constraint: str) -> Iterator[None]:
    """Turn the per-tenant unique-name violation (raised at flush) into `NameTaken`."""
    try:
        yield
    except IntegrityError as exc:
        if constraint in str(exc.__cause__):
            raise NameTaken(what, name) from None
        raise


class InUse(SchedulingError):
    status_code = 409
    title = "In use"

    def __init__(self, what: str) -> None:
        super().__init__(f"The {what} has bookings; deactivate it instead (PATCH active=false)")


# ---------------------------------------------------------------------------- validation
def check_ranges(ranges: Sequence[Sequence[str]], field: str) -> list[list[str]]:
    with invalid_field():
        return weekly_hours.check_ranges(ranges, field)


def check_weekly_hours(hours: Mapping[Any, Sequence[Sequence[str]]]) -> dict[str, list[list[str]]]:
    with invalid_field():
        return weekly_hours.check_weekly(hours, "weekly_hours")


@contextmanager
def invalid_field() -> Iterator[None]:
    """Hours the shared rule refuses are a 422 naming the field."""
    try:
        yield
    except weekly_hours.InvalidHours as exc:
        raise InvalidField(exc.where, str(exc)) from None


def check_exceptions(exceptions: Sequence[DateException]) -> dict[date, DateException]:
    by_day: dict[date, DateException] = {}
    for exception in exceptions:
        if exception.date in by_day:
            raise InvalidField("exceptions", f"{exception.date.isoformat()} is listed twice")
        check_ranges(exception.hours, f"exceptions.{exception.date.isoformat()}")
        by_day[exception.date] = exception
    return by_day


def exceptions_by_day(value: Any) -> dict[date, Any]:
    return {date.fromisoformat(day): hours for day, hours in (json_column(value) or {}).items()}


# ---------------------------------------------------------------------------- resources
class ResourceRepository(SQLAlchemyAsyncRepository[Resource]):
    model_type = Resource


class ResourceService(SQLAlchemyAsyncRepositoryService[Resource, ResourceRepository]):
    repository_type = ResourceRepository

    async def list_for(self, tenant_id: UUID) -> Sequence[Resource]:
        return await self.get_many(Resource.tenant_id == tenant_id, order_by=[(Resource.name, False)])

    async def get_for(self, tenant_id: UUID, resource_id: UUID) -> Resource:
        found = await self.get_one_or_none(Resource.id == resource_id, Resource.tenant_id == tenant_id)
        if found is None:
            raise NotFound("resource")
        return found

    async def create_for(self, tenant_id: UUID, data: ResourceCreate) -> Resource:
        hours = check_weekly_hours(data.weekly_hours if data.weekly_hours is not None else DEFAULT_WEEKLY_HOURS)
        resource = Resource(tenant_id=tenant_id, name=data.name, kind=data.kind, active=data.active, weekly_hours=hours)
        resource.exceptions = [_exception_row(tenant_id, e) for e in check_exceptions(data.exceptions).values()]
        with unique_name("resource", data.name, RESOURCE_NAME_UNIQUE):
            return await self.repository.add(resource)

    async def update_for(self, tenant_id: UUID, resource_id: UUID, data: ResourceUpdate) -> Resource:
        resource = await self.get_for(tenant_id, resource_id)
        if data.name is not msgspec.UNSET:
            resource.name = data.name
        if data.kind is not msgspec.UNSET:
            resource.kind = data.kind
        if data.active is not msgspec.UNSET:
            resource.active = data.active
        if data.weekly_hours is not msgspec.UNSET:
            resource.weekly_hours = check_weekly_hours(data.weekly_hours)
        if data.exceptions is not msgspec.UNSET:
            wanted = check_exceptions(data.exceptions)
            # Update rows in place by date: a delete-then-insert of the same date in one flush would
            # trip the (resource, day) unique constraint (the unit of work inserts before it deletes).
            kept = []
            for row in resource.exceptions:
                if row.day in wanted:
                    update = wanted.pop(row.day)
                    row.hours = check_ranges(update.hours, "exceptions")
                    row.note = update.note
                    kept.append(row)
            resource.exceptions = kept + [_exception_row(tenant_id, e) for e in wanted.values()]
        with unique_name("resource", resource.name, RESOURCE_NAME_UNIQUE):
            return await self.repository.update(resource)

    async def delete_for(self, tenant_id: UUID, resource_id: UUID) -> None:
        await self.get_for(tenant_id, resource_id)
        if await _has_bookings(cast("AsyncSession", self.repository.session), Booking.resource_id == resource_id):
            raise InUse("resource")
        try:
            await self.delete(resource_id)  # its holds, allocations and busy blocks go with it
        except ForeignKeyError:
            raise InUse("resource") from None

    @staticmethod
    def to_read(resource: Resource) -> ResourceRead:
        return ResourceRead(
            id=resource.id,
            name=resource.name,
            kind=resource.kind,
            active=resource.active,
            weekly_hours={day: [(s, e) for s, e in resource.weekly_hours.get(day, [])] for day in WEEKDAYS},
            exceptions=[
                DateException(date=row.day, hours=[(s, e) for s, e in row.hours], note=row.note)
                for row in resource.exceptions
            ],
            created_at=resource.created_at,
            updated_at=resource.updated_at,
        )


def _exception_row(tenant_id: UUID, exception: DateException) -> ResourceException:
    return ResourceException(
        tenant_id=tenant_id,
        day=exception.date,
        hours=check_ranges(exception.hours, "exceptions"),
        note=exception.note,
    )


async def _has_bookings(session: AsyncSession, condition: Any) -> bool:
    found = await session.execute(select(Booking.id).where(condition).limit(1))
    return found.first() is not None


# ---------------------------------------------------------------------------- job types
class JobTypeRepository(SQLAlchemyAsyncRepository[JobType]):
    model_type = JobType


class JobTypeService(SQLAlchemyAsyncRepositoryService[JobType, JobTypeRepository]):
    repository_type = JobTypeRepository

    async def list_for(self, tenant_id: UUID) -> Sequence[JobType]:
        return await self.get_many(JobType.tenant_id == tenant_id, order_by=[(JobType.name, False)])

    async def get_for(self, tenant_id: UUID, job_type_id: UUID) -> JobType:
        found = await self.get_one_or_none(JobType.id == job_type_id, JobType.tenant_id == tenant_id)
        if found is None:
            raise NotFound("job type")
        return found

    async def create_for(self, tenant_id: UUID, data: JobTypeCreate) -> JobType:
        with unique_name("job type", data.name, JOB_TYPE_NAME_UNIQUE):
            return await self.repository.add(JobType(tenant_id=tenant_id, **msgspec.structs.asdict(data)))

    async def update_for(self, tenant_id: UUID, job_type_id: UUID, data: JobTypeUpdate) -> JobType:
        job_type = await self.get_for(tenant_id, job_type_id)
        for name, value in msgspec.structs.asdict(data).items():
            if value is not msgspec.UNSET:
                setattr(job_type, name, value)
        with unique_name("job type", job_type.name, JOB_TYPE_NAME_UNIQUE):
            return await self.repository.update(job_type)

    async def delete_for(self, tenant_id: UUID, job_type_id: UUID) -> None:
        await self.get_for(tenant_id, job_type_id)
        session = cast("AsyncSession", self.repository.session)
        if await _has_bookings(session, Booking.job_type_id == job_type_id):
            raise InUse("job type")
        # Its live holds go with it, allocation first (the hold row follows by cascade).
        await (await raw_connection(session)).execute(
            "DELETE FROM sched_allocations WHERE id IN "
            "(SELECT allocation_id FROM sched_holds WHERE job_type_id = $1 AND tenant_id = $2)",
            job_type_id,
            tenant_id,
        )
        try:
            await self.delete(job_type_id)
        except ForeignKeyError:
            raise InUse("job type") from None

    @staticmethod
    def to_read(job_type: JobType) -> JobTypeRead:
        return JobTypeRead(
            id=job_type.id,
            name=job_type.name,
            duration_minutes=job_type.duration_minutes,
            buffer_before_minutes=job_type.buffer_before_minutes,
            buffer_after_minutes=job_type.buffer_after_minutes,
            min_notice_minutes=job_type.min_notice_minutes,
            active=job_type.active,
            created_at=job_type.created_at,
            updated_at=job_type.updated_at,
        )


_BOOKABLE_JOB_TYPE = """
    SELECT id FROM sched_job_types
    WHERE tenant_id = $1 AND active
    ORDER BY coalesce(array_position($2::uuid[], id), 2147483647), created_at, id
    LIMIT 1
"""


async def bookable_job_type(session: AsyncSession, tenant_id: UUID, preferred: Sequence[UUID | None]) -> UUID | None:
    """The first of `preferred` that is an active job type of the tenant, else its oldest active one."""
    wanted = [job_type_id for job_type_id in preferred if job_type_id is not None]
    found: UUID | None = await (await raw_connection(session)).fetchval(_BOOKABLE_JOB_TYPE, tenant_id, wanted)
    return found


# ---------------------------------------------------------------------------- busy blocks
class BusyBlockRepository(SQLAlchemyAsyncRepository[BusyBlock]):
    model_type = BusyBlock


def _during(start: datetime, end: datetime) -> Range[datetime]:
    if end <= start:
        raise InvalidField("end", "must be after start")
    return Range(start.astimezone(UTC), end.astimezone(UTC), bounds="[)")


class BusyBlockService(SQLAlchemyAsyncRepositoryService[BusyBlock, BusyBlockRepository]):
    repository_type = BusyBlockRepository

    async def list_for(
        self,
        tenant_id: UUID,
        resource_id: UUID | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Sequence[BusyBlock]:
        filters: list[Any] = [BusyBlock.tenant_id == tenant_id]
        if resource_id is not None:
            filters.append(BusyBlock.resource_id == resource_id)
        if start is not None or end is not None:
            window = Range(start, end, bounds="[)")
            filters.append(BusyBlock.during.overlaps(window))
        return await self.get_many(*filters, order_by=[(BusyBlock.during, False)])

    async def get_for(self, tenant_id: UUID, busy_block_id: UUID) -> BusyBlock:
        found = await self.get_one_or_none(BusyBlock.id == busy_block_id, BusyBlock.tenant_id == tenant_id)
        if found is None:
            raise NotFound("busy block")
        return found

    async def create_for(self, tenant_id: UUID, data: BusyBlockCreate) -> BusyBlock:
        session = cast("AsyncSession", self.repository.session)
        await _resource_in_tenant(session, tenant_id, data.resource_id)
        block = BusyBlock(
            tenant_id=tenant_id,
            resource_id=data.resource_id,
            during=_during(data.start, data.end),
            title=data.title,
            source="api",
            external_id=data.external_id,
        )
        try:
            return await self.repository.add(block)
        except IntegrityError as exc:
            if BUSY_BLOCK_EXTERNAL_UNIQUE in str(exc.__cause__):
                raise InvalidField("external_id", "this resource has a busy block with that external_id") from None
            raise

    async def update_for(self, tenant_id: UUID, busy_block_id: UUID, data: BusyBlockUpdate) -> BusyBlock:
        block = await self.get_for(tenant_id, busy_block_id)
        start = block.during.lower if data.start is msgspec.UNSET else data.start
        end = block.during.upper if data.end is msgspec.UNSET else data.end
        assert start is not None
        assert end is not None
        block.during = _during(start, end)
        if data.title is not msgspec.UNSET:
            block.title = data.title
        return await self.repository.update(block)

    async def delete_for(self, tenant_id: UUID, busy_block_id: UUID) -> None:
        await self.get_for(tenant_id, busy_block_id)
        await self.delete(busy_block_id)

    @staticmethod
    def to_read(block: BusyBlock) -> BusyBlockRead:
        assert block.during.lower is not None
        assert block.during.upper is not None
        return BusyBlockRead(
            id=block.id,
            resource_id=block.resource_id,
            start=block.during.lower,
            end=block.during.upper,
            title=block.title,
            source=block.source,
            external_id=block.external_id,
        )


async def _resource_in_tenant(session: AsyncSession, tenant_id: UUID, resource_id: UUID) -> None:
    found = await session.execute(
        select(Resource.id).where(Resource.id == resource_id, Resource.tenant_id == tenant_id)
    )
    if found.first() is None:
        raise InvalidField("resource_id", "no such resource")

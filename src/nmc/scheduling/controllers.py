"""Scheduling REST under `/api` (Clerk session; every handler scoped by the caller's tenant).

Problems are RFC 9457 details: 404 for an id in the path the tenant does not own, 409 when the slot
is taken (with the interval it collided with), 422 naming the field for anything unusable in what
was sent — including what fails the request schema (`nmc.problems.schema_problem`, for all of `/api`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.identity import Principal
from nmc.scheduling import booking
from nmc.scheduling.enums import BookingStatus
from nmc.scheduling.metrics import booking_post_timer
from nmc.scheduling.schemas import (
    AvailabilityRead,
    BookingCancel,
    BookingCreate,
    BookingRead,
    BookingReschedule,
    BusyBlockCreate,
    BusyBlockRead,
    BusyBlockUpdate,
    ConflictProblem,
    FieldProblem,
    HoldCreate,
    HoldRead,
    JobTypeCreate,
    JobTypeRead,
    JobTypeUpdate,
    ResourceCreate,
    ResourceRead,
    ResourceUpdate,
)
from nmc.scheduling.service import BusyBlockService, JobTypeService, ResourceService

AuthedRequest = Request[Principal, Any, Any]
MAX_OFFSET = 10_000_000  # far past any tenant's bookings; an int64 overflow is a 422, not a database error

INVALID = ResponseSpec(data_container=FieldProblem, description="A field cannot be used; `field` names it")
TAKEN = ResponseSpec(
    data_container=ConflictProblem,
    description="The slot overlaps a booking, a live hold or a busy block; `conflict` is that interval",
)
IN_USE = ResponseSpec(data_container=ConflictProblem, description="Still referenced by bookings")


class ResourceController(Controller):
    path = "/resources"
    tags = ["Scheduling: resources"]
    dependencies = {"resources": Provide(create_service_provider(ResourceService))}

    @get(summary="List resources (weekly hours and date exceptions included)")
    async def list_resources(
        self, request: AuthedRequest, resources: NamedDependency[ResourceService]
    ) -> list[ResourceRead]:
        return [resources.to_read(r) for r in await resources.list_for(request.user.tenant_id)]

    @post(summary="Create a resource (technician, truck, chair)", responses={422: INVALID})
    async def create_resource(
        self, request: AuthedRequest, resources: NamedDependency[ResourceService], data: JSONBody[ResourceCreate]
    ) -> ResourceRead:
        return resources.to_read(await resources.create_for(request.user.tenant_id, data))

    @get("/{resource_id:uuid}", summary="A resource")
    async def read_resource(
        self, request: AuthedRequest, resources: NamedDependency[ResourceService], resource_id: FromPath[UUID]
    ) -> ResourceRead:
        return resources.to_read(await resources.get_for(request.user.tenant_id, resource_id))

    @patch(
        "/{resource_id:uuid}",
        summary="Update a resource; `exceptions`, when given, replaces the list",
        responses={422: INVALID},
    )
    async def update_resource(
        self,
        request: AuthedRequest,
        resources: NamedDependency[ResourceService],
        resource_id: FromPath[UUID],
        data: JSONBody[ResourceUpdate],
    ) -> ResourceRead:
        return resources.to_read(await resources.update_for(request.user.tenant_id, resource_id, data))

    @delete(
        "/{resource_id:uuid}",
        summary="Delete a resource without bookings (its holds and busy blocks go with it)",
        responses={409: IN_USE},
    )
    async def delete_resource(
        self, request: AuthedRequest, resources: NamedDependency[ResourceService], resource_id: FromPath[UUID]
    ) -> None:
        await resources.delete_for(request.user.tenant_id, resource_id)


class JobTypeController(Controller):
    path = "/job-types"
    tags = ["Scheduling: job types"]
    dependencies = {"job_types": Provide(create_service_provider(JobTypeService))}

    @get(summary="List job types")
    async def list_job_types(
        self, request: AuthedRequest, job_types: NamedDependency[JobTypeService]
    ) -> list[JobTypeRead]:
        return [job_types.to_read(j) for j in await job_types.list_for(request.user.tenant_id)]

    @post(summary="Create a job type (duration, buffers, minimum notice)", responses={422: INVALID})
    async def create_job_type(
        self, request: AuthedRequest, job_types: NamedDependency[JobTypeService], data: JSONBody[JobTypeCreate]
    ) -> JobTypeRead:
        return job_types.to_read(await job_types.create_for(request.user.tenant_id, data))

    @get("/{job_type_id:uuid}", summary="A job type")
    async def read_job_type(
        self, request: AuthedRequest, job_types: NamedDependency[JobTypeService], job_type_id: FromPath[UUID]
    ) -> JobTypeRead:
        return job_types.to_read(await job_types.get_for(request.user.tenant_id, job_type_id))

    @patch(
        "/{job_type_id:uuid}",
        summary="Update a job type (existing bookings keep their times)",
        responses={422: INVALID},
    )
    async def update_job_type(
        self,
        request: AuthedRequest,
        job_types: NamedDependency[JobTypeService],
        job_type_id: FromPath[UUID],
        data: JSONBody[JobTypeUpdate],
    ) -> JobTypeRead:
        return job_types.to_read(await job_types.update_for(request.user.tenant_id, job_type_id, data))

    @delete("/{job_type_id:uuid}", summary="Delete a job type without bookings", responses={409: IN_USE})
    async def delete_job_type(
        self, request: AuthedRequest, job_types: NamedDependency[JobTypeService], job_type_id: FromPath[UUID]
    ) -> None:
        await job_types.delete_for(request.user.tenant_id, job_type_id)


class BusyBlockController(Controller):
    path = "/busy-blocks"
    tags = ["Scheduling: busy blocks"]
    dependencies = {"busy_blocks": Provide(create_service_provider(BusyBlockService))}

    @get(summary="List busy blocks (optionally of one resource, overlapping a window)")
    async def list_busy_blocks(
        self,
        request: AuthedRequest,
        busy_blocks: NamedDependency[BusyBlockService],
        resource_id: FromQuery[UUID | None] = None,
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
    ) -> list[BusyBlockRead]:
        blocks = await busy_blocks.list_for(request.user.tenant_id, resource_id, start, end)
        return [busy_blocks.to_read(b) for b in blocks]

    @post(summary="Create a busy block (time a resource is taken outside our bookings)", responses={422: INVALID})
    async def create_busy_block(
        self, request: AuthedRequest, busy_blocks: NamedDependency[BusyBlockService], data: JSONBody[BusyBlockCreate]
    ) -> BusyBlockRead:
        return busy_blocks.to_read(await busy_blocks.create_for(request.user.tenant_id, data))

    @get("/{busy_block_id:uuid}", summary="A busy block")
    async def read_busy_block(
        self, request: AuthedRequest, busy_blocks: NamedDependency[BusyBlockService], busy_block_id: FromPath[UUID]
    ) -> BusyBlockRead:
        return busy_blocks.to_read(await busy_blocks.get_for(request.user.tenant_id, busy_block_id))

    @patch("/{busy_block_id:uuid}", summary="Move or rename a busy block", responses={422: INVALID})
    async def update_busy_block(
        self,
        request: AuthedRequest,
        busy_blocks: NamedDependency[BusyBlockService],
        busy_block_id: FromPath[UUID],
        data: JSONBody[BusyBlockUpdate],
    ) -> BusyBlockRead:
        return busy_blocks.to_read(await busy_blocks.update_for(request.user.tenant_id, busy_block_id, data))

    @delete("/{busy_block_id:uuid}", summary="Delete a busy block")
    async def delete_busy_block(
        self, request: AuthedRequest, busy_blocks: NamedDependency[BusyBlockService], busy_block_id: FromPath[UUID]
    ) -> None:
        await busy_blocks.delete_for(request.user.tenant_id, busy_block_id)


class AvailabilityController(Controller):
    path = "/availability"
    tags = ["Scheduling: availability"]

    @get(
        summary="Open starts for a job type in a window",
        description=(
            "Starts on the `SEARCH_GRANULARITY_MINUTES` grid of the tenant's local clock, inside working hours "
            "(date exceptions applied), after the job type's minimum notice, whose job plus buffers overlaps no "
            "booking, live hold or busy block. Repeat `resource_id` to search several resources; leave it out for "
            "every active one. Windows span at most 31 days; times in the answer carry the tenant's UTC offset."
        ),
        responses={422: INVALID},
    )
    async def search(
        self,
        request: AuthedRequest,
        db_session: NamedDependency[AsyncSession],
        job_type_id: FromQuery[UUID],
        start: FromQuery[datetime],
        end: FromQuery[datetime],
        resource_id: FromQuery[list[UUID] | None] = None,
    ) -> AvailabilityRead:
        return await booking.search_availability(
            db_session, request.user.tenant_id, job_type_id=job_type_id, start=start, end=end, resource_ids=resource_id
        )


class HoldController(Controller):
    path = "/holds"
    tags = ["Scheduling: holds and bookings"]

    @post(
        summary="Hold a slot for HOLD_TTL_MINUTES",
        description="201 with the hold, or 409 with the interval the slot overlaps. An expired hold blocks no one.",
        responses={409: TAKEN, 422: INVALID},
    )
    async def create_hold(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[HoldCreate]
    ) -> HoldRead:
        return await booking.create_hold(db_session, request.user.tenant_id, data)

    @delete("/{hold_id:uuid}", summary="Release a hold")
    async def release_hold(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], hold_id: FromPath[UUID]
    ) -> None:
        await booking.release_hold(db_session, request.user.tenant_id, hold_id)


class BookingController(Controller):
    path = "/bookings"
    tags = ["Scheduling: holds and bookings"]

    @post(
        summary="Book a held slot (`hold_id`) or a slot directly (`resource_id` + `job_type_id` + `start`)",
        description=(
            "201 with the booking, or 409: the slot is taken (`conflict` names the interval) or the hold expired."
        ),
        responses={409: TAKEN, 422: INVALID},
        middleware=[booking_post_timer],
    )
    async def create_booking(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[BookingCreate]
    ) -> BookingRead:
        return await booking.create_booking(db_session, request.user.tenant_id, data)

    @get(summary="List bookings by start time (`start`/`end` keep those overlapping the window)")
    async def list_bookings(
        self,
        request: AuthedRequest,
        db_session: NamedDependency[AsyncSession],
        start: FromQuery[datetime | None] = None,
        end: FromQuery[datetime | None] = None,
        resource_id: FromQuery[UUID | None] = None,
        status: FromQuery[BookingStatus | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    ) -> list[BookingRead]:
        return await booking.list_bookings(
            db_session,
            request.user.tenant_id,
            start=start,
            end=end,
            resource_id=resource_id,
            status=status,
            limit=limit,
            offset=offset,
        )

    @get("/{booking_id:uuid}", summary="A booking")
    async def read_booking(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], booking_id: FromPath[UUID]
    ) -> BookingRead:
        return await booking.get_booking(db_session, request.user.tenant_id, booking_id)

    @post("/{booking_id:uuid}/cancel", status_code=200, summary="Cancel a booking and free its slot")
    async def cancel_booking(
        self,
        request: AuthedRequest,
        db_session: NamedDependency[AsyncSession],
        booking_id: FromPath[UUID],
        data: JSONBody[BookingCancel | None] = None,
    ) -> BookingRead:
        return await booking.cancel_booking(db_session, request.user.tenant_id, booking_id, data)

    @post(
        "/{booking_id:uuid}/reschedule",
        status_code=200,
        summary="Move a booking to another start (and optionally another resource)",
        responses={409: TAKEN, 422: INVALID},
    )
    async def reschedule_booking(
        self,
        request: AuthedRequest,
        db_session: NamedDependency[AsyncSession],
        booking_id: FromPath[UUID],
        data: JSONBody[BookingReschedule],
    ) -> BookingRead:
        return await booking.reschedule_booking(db_session, request.user.tenant_id, booking_id, data)


SCHEDULING_CONTROLLERS: list[type[Controller]] = [
    ResourceController,
    JobTypeController,
    BusyBlockController,
    AvailabilityController,
    HoldController,
    BookingController,
]

"""`/api/numbers` and `/api/onboarding` (issue #15): a business gets a number and goes live by itself.

Buying, importing, changing the forwarding number and releasing are the organisation admins' (the
owner role); any member may read, verify a forwarding code and place the test call.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import raw_connection, session_scope
from nmc.events import E164_PATTERN
from nmc.identity import Principal, TenantNumber, tenant_number, tenant_numbers
from nmc.problems import DomainError, NotFound
from nmc.telephony import numbers, onboarding
from nmc.telephony.schemas import (
    AREA_CODE_PATTERN,
    CONTAINS_PATTERN,
    AvailableNumberRead,
    ForwardingCode,
    ForwardingRead,
    NumberCreate,
    NumberRead,
    NumberUpdate,
    OnboardingRead,
    TestCallCreate,
    TestCallRead,
)
from nmc.telephony.twilio_numbers import TwilioNumbers, TwilioUnavailable


class OwnersOnly(DomainError):
    status_code: ClassVar[int] = 403
    title: ClassVar[str] = "Forbidden"


def _owner(request: Request[Principal, Any, Any], what: str) -> Principal:
    if not request.user.is_owner:
        raise OwnersOnly(f"Only the organisation's admins may {what}")
    return request.user


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def number_read(number: TenantNumber) -> NumberRead:
    pending = number.forwarding_code_pending and number.forwarding_verified_at is None
    return NumberRead(
        id=str(number.id),
        phone_number=number.twilio_number,
        forward_to=number.forwarding_number,
        source=number.source,
        forwarding=ForwardingRead(
            verified=number.forwarding_verified_at is not None,
            verified_at=_iso(number.forwarding_verified_at),
            code_pending=pending,
            code_expires_at=_iso(number.forwarding_code_expires_at) if pending else None,
            attempts_left=max(numbers.CODE_MAX_ATTEMPTS - number.forwarding_code_attempts, 0) if pending else 0,
        ),
        created_at=number.created_at.isoformat(),
    )


class NumbersController(Controller):
    path = "/numbers"
    tags = ["Numbers"]

    @get("/available", summary="Local numbers on sale (calls and texts), by area code, digits or nearness")
    async def available(
        self,
        area_code: Annotated[
            str | None, QueryParameter(pattern=AREA_CODE_PATTERN, description="Three digits, e.g. 415")
        ] = None,
        contains: Annotated[
            str | None, QueryParameter(pattern=CONTAINS_PATTERN, description="Digits (or letters) the number contains")
        ] = None,
        near: Annotated[
            str | None, QueryParameter(pattern=E164_PATTERN, description="A number the new one should be near (E.164)")
        ] = None,
    ) -> list[AvailableNumberRead]:
        try:
            found = await TwilioNumbers().search(area_code=area_code, contains=contains, near=near)
        except TwilioUnavailable as exc:
            raise numbers.TwilioFailed("Twilio did not answer the search; try again") from exc
        return [
            AvailableNumberRead(
                phone_number=n.phone_number,
                friendly_name=n.friendly_name,
                locality=n.locality,
                region=n.region,
                postal_code=n.postal_code,
                iso_country=n.iso_country,
            )
            for n in found
        ]

    @get("/", summary="The tenant's numbers")
    async def list_numbers(
        self, request: Request[Principal, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> list[NumberRead]:
        return [number_read(n) for n in await tenant_numbers(await raw_connection(db_session), request.user.tenant_id)]

    @post(
        "/",
        status_code=201,
        summary="Buy a number: its calls and texts come to us; a code is texted to forward_to to verify it",
        description="201 for a new number (or one found already bought for the tenant after a failed attempt), "
        "200 for the answer of an earlier request with the same Idempotency-Key.",
    )
    async def buy(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[NumberCreate],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", min_length=1, max_length=200, required=False)
        ] = None,
    ) -> Response[NumberRead]:
        principal = _owner(request, "buy numbers")
        bought = await numbers.purchase(
            await raw_connection(db_session), principal.tenant_id, data.phone_number, data.forward_to, idempotency_key
        )
        return Response(number_read(bought.number), status_code=201 if bought.created else 200)

    @post("/import", status_code=201, summary="Bring a number already in our Twilio account")
    async def import_number(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[NumberCreate],
    ) -> Response[NumberRead]:
        principal = _owner(request, "import numbers")
        imported = await numbers.import_number(
            await raw_connection(db_session), principal.tenant_id, data.phone_number, data.forward_to
        )
        return Response(number_read(imported.number), status_code=201 if imported.created else 200)

    @get("/{number_id:uuid}", summary="One of the tenant's numbers")
    async def read_number(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        number_id: FromPath[UUID],
    ) -> NumberRead:
        number = await tenant_number(await raw_connection(db_session), request.user.tenant_id, number_id)
        if number is None:
            raise NotFound("No such number")
        return number_read(number)

    @patch("/{number_id:uuid}", summary="Change where calls ring (the new number is verified by a texted code)")
    async def update_number(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        number_id: FromPath[UUID],
        data: JSONBody[NumberUpdate],
    ) -> NumberRead:
        principal = _owner(request, "change forwarding")
        connection = await raw_connection(db_session)
        return number_read(await numbers.change_forward_to(connection, principal.tenant_id, number_id, data.forward_to))

    @delete("/{number_id:uuid}", status_code=204, summary="Release the number at Twilio (calls and texts stop)")
    async def release_number(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        number_id: FromPath[UUID],
    ) -> None:
        principal = _owner(request, "release numbers")
        await numbers.release(await raw_connection(db_session), principal.tenant_id, number_id)

    @post("/{number_id:uuid}/forwarding-code", status_code=202, summary="Text a new code to the forwarding number")
    async def send_code(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        number_id: FromPath[UUID],
    ) -> NumberRead:
        connection = await raw_connection(db_session)
        return number_read(await numbers.resend_code(connection, request.user.tenant_id, number_id))

    @post("/{number_id:uuid}/verify-forwarding", status_code=200, summary="Confirm the code texted to forward_to")
    async def verify_forwarding(
        self, request: Request[Principal, Any, Any], number_id: FromPath[UUID], data: JSONBody[ForwardingCode]
    ) -> NumberRead:
        # Its own transaction, committed whatever the outcome: a wrong guess must spend an attempt even
        # though the answer is a 422 (the request's session rolls back on an error answer).
        async with session_scope() as session:
            connection = await raw_connection(session)
            try:
                await numbers.verify_forwarding(connection, request.user.tenant_id, number_id, data.code)
            except numbers.CodeRefused as refused:
                await session.commit()
                raise refused from None
        async with session_scope() as session:
            number = await tenant_number(await raw_connection(session), request.user.tenant_id, number_id)
        assert number is not None
        return number_read(number)


class OnboardingController(Controller):
    path = "/onboarding"
    tags = ["Onboarding"]

    @get("/", summary="The onboarding steps and their state; the tenant texts callers once it is active")
    async def read_onboarding(
        self, request: Request[Principal, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> OnboardingRead:
        return await onboarding.checklist(await raw_connection(db_session), request.user.tenant_id)

    @post("/test-call", status_code=201, summary="Call the tenant's number through Twilio, to see the first SMS arrive")
    async def test_call(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        data: JSONBody[TestCallCreate | None] = None,
    ) -> TestCallRead:
        number_id = data.number_id if data is not None else None
        return await onboarding.place_test_call(await raw_connection(db_session), request.user.tenant_id, number_id)


NUMBER_CONTROLLERS: list[type[Controller]] = [NumbersController, OnboardingController]

"""Tenants: creation (CLI), the caller's own tenant (REST), and org → tenant resolution (auth)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from advanced_alchemy.exceptions import IntegrityError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import Transactional, raw_connection, session_scope
from nmc.events import TenantCreated, publish
from nmc.identity.models import Tenant, TenantPhoneNumber
from nmc.identity.schemas import PhoneNumberRead, TenantCreate, TenantRead, TenantUpdate
from nmc.observability.correlation import current_correlation_id
from nmc.problems import Conflict, InvalidField
from nmc.weekly_hours import InvalidHours, check_weekly


@dataclass(frozen=True)
class NumberOwner:
    """The tenant a Twilio number belongs to, as the webhooks need it."""

    tenant_id: UUID
    business_name: str
    forwarding_number: str
    # Calls ring the forwarding number only once it is verified (issue #15); until then a call is
    # missed at once and the caller texted back.
    forwarding_verified: bool = True


_OWNER_OF = """
    SELECT n.tenant_id, t.name, n.forwarding_number, n.forwarding_verified_at IS NOT NULL AS forwarding_verified
    FROM tenant_phone_numbers n JOIN tenants t ON t.id = n.tenant_id
    WHERE n.twilio_number = $1 AND n.released_at IS NULL
"""


async def owner_of(session: Transactional, number: str) -> NumberOwner | None:
    """On the first-SMS path: plain SQL on the session's connection (see `nmc.db.raw_connection`)."""
    row = await (await raw_connection(session)).fetchrow(_OWNER_OF, number)
    if row is None:
        return None
    return NumberOwner(row["tenant_id"], row["name"], row["forwarding_number"], row["forwarding_verified"])


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("America"), a name too long
        raise InvalidField("timezone", f"{name!r} is not an IANA time zone") from None
    return name


def check_business_hours(hours: dict[str, Any]) -> dict[str, list[list[str]]]:
    try:
        return check_weekly(hours, "business_hours")
    except InvalidHours as exc:
        raise InvalidField(exc.where, str(exc)) from None


class TenantRepository(SQLAlchemyAsyncRepository[Tenant]):
    model_type = Tenant


class TenantService(SQLAlchemyAsyncRepositoryService[Tenant, TenantRepository]):
    repository_type = TenantRepository

    async def create_tenant(self, data: TenantCreate) -> Tenant:
        tenant = Tenant(
            name=data.name,
            timezone=check_timezone(data.timezone),
            clerk_org_id=data.clerk_org_id,
            phone_numbers=[
                TenantPhoneNumber(twilio_number=data.twilio_number, forwarding_number=data.forwarding_number)
            ],
        )
        tenant = await self.repository.add(tenant)
        await publish(
            cast("AsyncSession", self.repository.session),
            TenantCreated(tenant_id=tenant.id, business_name=tenant.name, correlation_id=current_correlation_id()),
        )
        return tenant

    async def update_tenant(self, tenant_id: UUID, data: TenantUpdate) -> Tenant:
        changes: dict[str, Any] = {}
        if data.name is not msgspec.UNSET:
            changes["name"] = data.name
        if data.timezone is not msgspec.UNSET:
            changes["timezone"] = check_timezone(data.timezone)
        if data.business_hours is not msgspec.UNSET:
            changes["business_hours"] = check_business_hours(dict(data.business_hours))
        if "timezone" in changes or "business_hours" in changes:
            changes["hours_set_at"] = datetime.now(UTC)  # onboarding's "business hours and timezone" step
        tenant = await self.get(tenant_id)
        for key, value in changes.items():
            setattr(tenant, key, value)
        return await self.repository.update(tenant)

    @staticmethod
    def to_read(tenant: Tenant) -> TenantRead:
        return TenantRead(
            id=tenant.id,
            name=tenant.name,
            timezone=tenant.timezone,
            business_hours=tenant.business_hours,
            status=tenant.status,
            clerk_org_id=tenant.clerk_org_id,
            phone_numbers=[
                PhoneNumberRead(twilio_number=n.twilio_number, forwarding_number=n.forwarding_number)
                for n in tenant.phone_numbers
                if n.released_at is None
            ],
        )


async def create_tenant(data: TenantCreate) -> TenantRead:
    """`nmc tenants create`: the tenant, its number, and `tenant.created`, in one transaction."""
    try:
        async with session_scope() as session:
            service = TenantService(session=session)
            return service.to_read(await service.create_tenant(data))
    except IntegrityError:
        raise Conflict(f"a tenant already uses number {data.twilio_number} or Clerk org {data.clerk_org_id}") from None


async def list_tenants() -> list[TenantRead]:
    async with session_scope() as session:
        tenants = (await session.execute(select(Tenant).order_by(Tenant.created_at))).scalars()
        return [TenantService.to_read(t) for t in tenants]

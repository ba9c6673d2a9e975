"""What the REST API and the CLI show of a tenant."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec

from nmc.events import E164
from nmc.weekly_hours import WeeklyHours


class PhoneNumberRead(msgspec.Struct):
    twilio_number: str
    forwarding_number: str


class TenantRead(msgspec.Struct):
    id: UUID
    name: str
    timezone: str
    business_hours: dict[str, Any]
    status: str
    clerk_org_id: str | None
    phone_numbers: list[PhoneNumberRead]


# An IANA time zone name (`tenants.timezone` holds 64 characters; the longest name has 32).
TimezoneName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, examples=["America/New_York"])]


class TenantUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | msgspec.UnsetType = msgspec.UNSET
    timezone: TimezoneName | msgspec.UnsetType = msgspec.UNSET
    business_hours: WeeklyHours | msgspec.UnsetType = msgspec.UNSET


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    twilio_number: E164
    forwarding_number: E164
    timezone: TimezoneName = "America/New_York"
    clerk_org_id: str | None = None

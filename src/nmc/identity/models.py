"""Tenants (the businesses), their Twilio numbers and their users.

Other modules never read these tables: SQL that needs a tenant's name, zone, hours or status joins
the `tenant_profiles` view, and a number's tenant or forwarding number `tenant_numbers` (created by
migration 7e1d00000006); Python code goes through `nmc.identity.service`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDAuditBase
from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship


class TenantStatus(StrEnum):
    ACTIVE = "active"  # texts callers back
    INACTIVE = "inactive"  # records calls and texts, sends nothing


DEFAULT_BUSINESS_HOURS: dict[str, list[list[str]]] = {
    day: [["08:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")
} | {"sat": [], "sun": []}


class Tenant(UUIDAuditBase):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="America/New_York")
    # {"mon": [["08:00","17:00"]], ...} in the tenant's timezone; a day may hold several ranges.
    business_hours: Mapped[dict[str, Any]] = mapped_column(JSONB, default=lambda: dict(DEFAULT_BUSINESS_HOURS))
    status: Mapped[str] = mapped_column(String(20), default=TenantStatus.ACTIVE)
    clerk_org_id: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)

    phone_numbers: Mapped[list[TenantPhoneNumber]] = relationship(
        back_populates="tenant", lazy="selectin", cascade="all, delete-orphan"
    )


class TenantPhoneNumber(UUIDAuditBase):
    __tablename__ = "tenant_phone_numbers"

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    twilio_number: Mapped[str] = mapped_column(String(20), unique=True)
    forwarding_number: Mapped[str] = mapped_column(String(20))

    tenant: Mapped[Tenant] = relationship(back_populates="phone_numbers", lazy="joined")


class User(UUIDAuditBase):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("clerk_user_id", "clerk_org_id", name="uq_users_clerk_user_org"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    clerk_user_id: Mapped[str] = mapped_column(String(64))
    clerk_org_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str | None] = mapped_column(String(64), default=None)

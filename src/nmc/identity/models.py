"""Tenants (the businesses), their Twilio numbers and their users.

Other modules never read these tables: SQL that needs a tenant's name, zone, hours or status joins
the `tenant_profiles` view, and a number's tenant or forwarding number `tenant_numbers` (created by
migration 7e1d00000006); Python code goes through `nmc.identity.service`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship


class TenantStatus(StrEnum):
    ONBOARDING = "onboarding"  # signed up (Clerk organisation), required onboarding steps open: texts no caller
    ACTIVE = "active"  # texts callers back
    INACTIVE = "inactive"  # records calls and texts, sends nothing
    DEACTIVATED = "deactivated"  # the Clerk organisation was deleted: numbers released, data kept; final


# Statuses whose members may use the API (a deactivated tenant's organisation no longer exists).
SIGNED_IN_STATUSES = frozenset({TenantStatus.ONBOARDING, TenantStatus.ACTIVE})


class NumberSource(StrEnum):
    OPERATOR = "operator"  # `nmc tenants create`: wired by hand, forwarding trusted
    PURCHASED = "purchased"  # POST /api/numbers: bought in our Twilio account for the tenant
    IMPORTED = "imported"  # POST /api/numbers/import: already in our Twilio account


class UserRole(StrEnum):
    OWNER = "owner"  # Clerk `org:admin` (v2 tokens: `admin`)
    MEMBER = "member"  # any other organisation role


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
    # The Clerk organisation's `updated_at` last applied (a webhook older than this changes nothing);
    # NULL for a tenant made by an operator or on the spot from a session token.
    clerk_updated_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # When the owner last set the timezone or business hours (the onboarding step); NULL: defaults.
    hours_set_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    phone_numbers: Mapped[list[TenantPhoneNumber]] = relationship(
        back_populates="tenant", lazy="selectin", cascade="all, delete-orphan"
    )


class TenantPhoneNumber(UUIDAuditBase):
    __tablename__ = "tenant_phone_numbers"
    __table_args__ = (UniqueConstraint("tenant_id", "purchase_key", name="uq_tenant_phone_numbers_purchase_key"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    twilio_number: Mapped[str] = mapped_column(String(20), unique=True)
    forwarding_number: Mapped[str] = mapped_column(String(20))
    # Self-serve numbers (issue #15). `twilio_sid`: the IncomingPhoneNumber (PN...) in our account.
    twilio_sid: Mapped[str | None] = mapped_column(String(34), unique=True, default=None)
    source: Mapped[str] = mapped_column(String(20), server_default=text("'operator'"))
    # The `Idempotency-Key` of the purchase that bought it (a repeat answers this number again).
    purchase_key: Mapped[str | None] = mapped_column(String(200), default=None)
    # Calls ring the forwarding number only once it is verified (a code texted to it). An operator's
    # number, and any row written without saying otherwise, counts as verified (server default).
    forwarding_verified_at: Mapped[datetime | None] = mapped_column(
        DateTimeUTC(timezone=True), server_default=func.now()
    )
    forwarding_code_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    forwarding_code_sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    forwarding_code_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    forwarding_code_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Released at Twilio (DELETE, or the organisation deleted): kept for history, routes nothing.
    released_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    tenant: Mapped[Tenant] = relationship(back_populates="phone_numbers", lazy="joined")


class User(UUIDAuditBase):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("clerk_user_id", "clerk_org_id", name="uq_users_clerk_user_org"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    clerk_user_id: Mapped[str] = mapped_column(String(64))
    clerk_org_id: Mapped[str] = mapped_column(String(64))
    # `UserRole`: owner or member, from the organisation role (`clerk_role`, as Clerk spells it).
    role: Mapped[str | None] = mapped_column(String(64), default=None)
    clerk_role: Mapped[str | None] = mapped_column(String(64), default=None)
    clerk_membership_id: Mapped[str | None] = mapped_column(String(64), default=None)
    identifier: Mapped[str | None] = mapped_column(String(320), default=None)  # the member's email or phone
    # The membership's version last applied (Clerk `updated_at`, or a deletion's event time).
    clerk_updated_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    removed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

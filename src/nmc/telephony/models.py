"""Calls to tenant numbers, and what became of them (`conv_calls`)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import UUIDBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Index, Integer, String, func
from sqlalchemy.orm import Mapped, mapped_column


class Call(UUIDBase):
    __tablename__ = "conv_calls"
    __table_args__ = (Index("ix_conv_calls_tenant_caller", "tenant_id", "caller", "created_at"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    # Twilio's `From`: E.164, or a SIP URI, `client:…`, `anonymous` (up to 255 characters).
    caller: Mapped[str] = mapped_column(String(255))
    tenant_number: Mapped[str] = mapped_column(String(20))
    # ringing → missed | answered; only a move to `missed` publishes `call.missed`.
    status: Mapped[str] = mapped_column(String(20))
    dial_status: Mapped[str | None] = mapped_column(String(20), default=None)
    duration_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    missed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class OnboardingTestCall(UUIDBase):
    """A test call the owner asked for during onboarding (`POST /api/onboarding/test-call`): Twilio's
    Calls API called the tenant's number from `from_number`; the call that arrives there is an
    ordinary call in `conv_calls` (its own CallSid: the inbound leg)."""

    __tablename__ = "telephony_test_calls"

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)  # the outbound-api leg's CallSid
    tenant_number: Mapped[str] = mapped_column(String(20))
    from_number: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())

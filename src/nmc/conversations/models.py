"""Threads, messages, opt-outs and each tenant's messaging settings (`conv_*`)."""

from __future__ import annotations

from datetime import datetime, time
from uuid import UUID

from advanced_alchemy.base import DefaultBase, UUIDBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, Time, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

OPEN = "open"
DEFAULT_QUIET_START = time(21, 0)
DEFAULT_QUIET_END = time(8, 0)


class Thread(UUIDBase):
    __tablename__ = "conv_threads"
    __table_args__ = (
        # One open thread per (tenant, caller): a new missed call joins it.
        Index(
            "uq_conv_threads_open_per_caller",
            "tenant_id",
            "caller",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_conv_threads_tenant_activity", "tenant_id", "last_activity_at"),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    caller: Mapped[str] = mapped_column(String(20))
    tenant_number: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=OPEN)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    last_activity_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class Message(UUIDBase):
    __tablename__ = "conv_messages"
    __table_args__ = (
        Index("ix_conv_messages_thread", "thread_id", "created_at"),
        Index("ix_conv_messages_tenant_to_kind", "tenant_id", "to_number", "kind", "created_at"),
        Index("ix_conv_messages_created_at", "created_at"),
        Index("ix_conv_messages_first_sms_sent", "sent_at", postgresql_where=text("kind = 'first_sms'")),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    thread_id: Mapped[UUID] = mapped_column(ForeignKey("conv_threads.id", ondelete="CASCADE"))
    call_id: Mapped[UUID | None] = mapped_column(ForeignKey("conv_calls.id", ondelete="SET NULL"), default=None)
    # What makes this text unique whatever is retried: `first_sms:<call id>`, ...
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    direction: Mapped[str] = mapped_column(String(10))  # outbound | inbound
    kind: Mapped[str] = mapped_column(String(30))  # first_sms | reply | ...
    to_number: Mapped[str] = mapped_column(String(20))
    from_number: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    # pending → sending → accepted/queued → sent → delivered | failed | undelivered;
    # or scheduled (quiet hours), paused, suppressed (with suppressed_reason).
    status: Mapped[str] = mapped_column(String(20))
    suppressed_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    twilio_sid: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    error_code: Mapped[int | None] = mapped_column(Integer, default=None)
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    send_started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Webhook received → Messages API accepted, for first SMS (the SLO).
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class OptOut(UUIDBase):
    __tablename__ = "conv_opt_outs"
    __table_args__ = (UniqueConstraint("tenant_id", "phone", name="uq_conv_opt_outs_tenant_phone"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(40))  # keyword | twilio_21610 | ...
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class MessagingSettings(DefaultBase):
    """Per-tenant templates and guards; a tenant without a row uses the defaults."""

    __tablename__ = "conv_settings"

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    first_sms_business_hours: Mapped[str | None] = mapped_column(Text, default=None)
    first_sms_after_hours: Mapped[str | None] = mapped_column(Text, default=None)
    booking_prompt: Mapped[str | None] = mapped_column(Text, default=None)
    quiet_hours_start: Mapped[time | None] = mapped_column(Time, default=DEFAULT_QUIET_START)
    quiet_hours_end: Mapped[time | None] = mapped_column(Time, default=DEFAULT_QUIET_END)
    quiet_hours_policy: Mapped[str] = mapped_column(String(20), default="delay")  # delay | suppress
    cooldown_minutes: Mapped[int] = mapped_column(Integer, default=60)
    updated_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), server_default=func.now(), onupdate=func.now()
    )

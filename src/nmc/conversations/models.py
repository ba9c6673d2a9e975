"""Threads, messages, opt-outs and each tenant's messaging settings (`conv_threads`, `conv_messages`,
`conv_opt_outs`, `conv_opt_out_events`, `conv_settings`), and status callbacks that came before their
SID was recorded (`conv_early_statuses`)."""

from __future__ import annotations

from datetime import datetime, time
from enum import StrEnum
from typing import Any
from uuid import UUID

from advanced_alchemy.base import DefaultBase, UUIDBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column


class ThreadStatus(StrEnum):
    OPEN = "open"
    BOOKED = "booked"
    CLOSED = "closed"
    OPTED_OUT = "opted_out"


# A caller's "current" thread: where their next message lands. At most one per (tenant, caller);
# booked and closed threads are finished, and the caller's next message opens a new one.
CURRENT_STATUSES = (ThreadStatus.OPEN, ThreadStatus.OPTED_OUT)
DEFAULT_QUIET_START = time(21, 0)
DEFAULT_QUIET_END = time(8, 0)
PREVIEW_LENGTH = 160


class Thread(UUIDBase):
    __tablename__ = "conv_threads"
    __table_args__ = (
        # One current thread per (tenant, caller): a new missed call or text joins it.
        Index(
            "uq_conv_threads_current_per_caller",
            "tenant_id",
            "caller",
            unique=True,
            postgresql_where=text("status IN ('open', 'opted_out')"),
        ),
        # The inbox: newest activity first, keyset-paginated on (last_activity_at, id).
        Index("ix_conv_threads_tenant_activity_id", "tenant_id", "last_activity_at", "id"),
        Index("ix_conv_threads_tenant_status_activity_id", "tenant_id", "status", "last_activity_at", "id"),
        Index(
            "ix_conv_threads_tenant_unread_activity_id",
            "tenant_id",
            "last_activity_at",
            "id",
            postgresql_where=text("unread_count > 0"),
        ),
        Index(
            "ix_conv_threads_follow_up_due", "follow_up_due_at", postgresql_where=text("follow_up_due_at IS NOT NULL")
        ),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # Twilio's `From` (E.164, a SIP URI, a short code…): up to 255 characters, as `conv_calls.caller`.
    caller: Mapped[str] = mapped_column(String(255))
    tenant_number: Mapped[str] = mapped_column(String(20))
    # open | booked | closed | opted_out
    status: Mapped[str] = mapped_column(String(20), default=ThreadStatus.OPEN)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    last_activity_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    # Inbound messages the owner has not marked read.
    unread_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_message_preview: Mapped[str | None] = mapped_column(String(PREVIEW_LENGTH), default=None)
    last_inbound_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # The owner alert rate limit: at most one per thread per hour.
    last_alerted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Set when a first SMS is accepted (if the tenant has follow-ups on); cleared by a reply, an
    # opt-out, a booking, closing, or when the follow-up is queued.
    follow_up_due_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


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
    # What makes this text unique whatever is retried: `first_sms:<call id>`, `follow_up:<thread id>`,
    # `owner_alert:<thread id>:<inbound message id>`, `help:<inbound message id>`, `reply:<tenant>:<key>`,
    # `booking:<inbound message id>`, `booking:expired:<hold id>`, `inbound:<MessageSid>`.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    direction: Mapped[str] = mapped_column(String(10))  # outbound | inbound
    # first_sms | reply (owner) | follow_up | help | owner_alert (to the owner) | booking (the booking
    # dialog) | inbound
    kind: Mapped[str] = mapped_column(String(30))
    # One of them is the caller's address (up to 255 characters, as `conv_threads.caller`).
    to_number: Mapped[str] = mapped_column(String(255))
    from_number: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    # Inbound MMS: [{"url": ..., "content_type": ...}] in Twilio's order.
    media: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB, default=None)
    # outbound: pending (queued in the outbox) → sending → accepted/queued → sent → delivered |
    # failed | undelivered; or scheduled (quiet hours), paused, suppressed (with suppressed_reason).
    # inbound: received.
    status: Mapped[str] = mapped_column(String(20))
    suppressed_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    twilio_sid: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    error_code: Mapped[int | None] = mapped_column(Integer, default=None)
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    send_started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Webhook received → Messages API accepted, for first SMS (the SLO).
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    # The text waited on purpose (quiet hours, the operator's pause) before it was sent: its latency is a
    # decision, not slowness, and stays out of the first-SMS SLO (issue #13).
    held_on_purpose: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class OptOut(UUIDBase):
    """Who is opted out now, per tenant. START deletes the row; `conv_opt_out_events` keeps the history."""

    __tablename__ = "conv_opt_outs"
    __table_args__ = (UniqueConstraint("tenant_id", "phone", name="uq_conv_opt_outs_tenant_phone"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(255))  # the caller's address, as `conv_threads.caller`
    source: Mapped[str] = mapped_column(String(40))  # keyword | twilio_opt_out_type | twilio_21610
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class OptOutEvent(UUIDBase):
    """The audit trail of opt-outs and opt-ins (never deleted by START)."""

    __tablename__ = "conv_opt_out_events"
    __table_args__ = (Index("ix_conv_opt_out_events_tenant_phone", "tenant_id", "phone", "created_at"),)

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(255))  # the caller's address, as `conv_threads.caller`
    action: Mapped[str] = mapped_column(String(10))  # opt_out | opt_in
    source: Mapped[str] = mapped_column(String(40))
    # The inbound message that carried the keyword, when there was one.
    message_id: Mapped[UUID | None] = mapped_column(ForeignKey("conv_messages.id", ondelete="SET NULL"), default=None)
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
    follow_up_template: Mapped[str | None] = mapped_column(Text, default=None)
    # Minutes after the first SMS; NULL: no follow-ups.
    follow_up_delay_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    help_text: Mapped[str | None] = mapped_column(Text, default=None)
    # The job callers book by SMS; NULL: the tenant's oldest active job type.
    booking_job_type_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("sched_job_types.id", ondelete="SET NULL"), default=None
    )
    owner_alerts_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # NULL: the forwarding number of the tenant number the thread is on.
    owner_alert_number: Mapped[str | None] = mapped_column(String(20), default=None)
    updated_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class EarlyStatus(DefaultBase):
    """A Twilio status callback for a SID no message carried yet; applied (and deleted) by the statement
    that records the SID (`delivery.py`), or deleted by retention after 7 days."""

    __tablename__ = "conv_early_statuses"

    message_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # the furthest status received (`STATUS_RANK`)
    error_code: Mapped[int | None] = mapped_column(Integer, default=None)
    received_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class FirstSmsLatency(DefaultBase):
    """The `first_sms_latency_seconds` histogram, kept as first SMS are accepted (the acceptance statement
    upserts one bucket row; `metrics.py` reads a few hundred rows at most). Retention never touches it,
    so the counts never go backwards. `le` is the bucket's upper bound in seconds (`Infinity` above the
    last); `shard` spreads concurrent acceptances over several rows of one bucket."""

    __tablename__ = "conv_first_sms_latency"

    le: Mapped[float] = mapped_column(Float, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    held_on_purpose: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    sum_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))

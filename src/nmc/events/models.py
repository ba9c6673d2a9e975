"""The outbox: domain events written in the caller's transaction, dispatched at least once."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Index, Integer, SmallInteger, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column


class _OutboxColumns:
    id: Mapped[UUID] = mapped_column(primary_key=True)
    event_name: Mapped[str] = mapped_column(String(100))
    event_version: Mapped[int] = mapped_column(SmallInteger)
    tenant_id: Mapped[UUID | None] = mapped_column(default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    correlation_id: Mapped[str] = mapped_column(String(100))
    causation_id: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    available_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The worker process that holds the current claim (`worker_heartbeats`): a claim whose worker
    # stopped beating is taken over at once, not after the lease.
    claimed_by: Mapped[UUID | None] = mapped_column(default=None)


class OutboxEvent(_OutboxColumns, DefaultBase):
    __tablename__ = "outbox_events"
    __table_args__ = (
        Index(
            "ix_outbox_events_pending",
            "available_at",
            postgresql_where=text("dispatched_at IS NULL"),
        ),
        Index("ix_outbox_events_dispatched_at", "dispatched_at"),
        Index("ix_outbox_events_name_created", "event_name", "created_at"),
    )


class OutboxEventError(_OutboxColumns, DefaultBase):
    """Poison events parked after the attempt limit (runbook §7.2); `just replay-outbox` moves them back."""

    __tablename__ = "outbox_events_errors"
    __table_args__ = (Index("ix_outbox_events_errors_name_created", "event_name", "created_at"),)

    failed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class WorkerHeartbeat(DefaultBase):
    """One row per running worker process, beaten every `HEARTBEAT_SECONDS`; deleted on a clean stop."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[UUID] = mapped_column(primary_key=True)
    process: Mapped[str] = mapped_column(String(20))  # worker | jobs
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    beat_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())

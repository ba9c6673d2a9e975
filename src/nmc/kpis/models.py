"""The lead-KPI projection's table (`conv_kpi_facts`)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Float, ForeignKey, Index, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column


class KpiFact(DefaultBase):
    """The KPI projection: one row per domain event that counts, keyed by the event's id.

    Written by the subscribers of the events (idempotent), rebuilt from `outbox_events` by
    `nmc kpis rebuild`; `/api/kpis` aggregates these rows, never the raw conversation tables.
    """

    __tablename__ = "conv_kpi_facts"
    __table_args__ = (
        PrimaryKeyConstraint("event_id", "metric", name="pk_conv_kpi_facts"),
        Index("ix_conv_kpi_facts_tenant_occurred", "tenant_id", "occurred_at"),
    )

    event_id: Mapped[UUID] = mapped_column()
    # missed_call | texted_back (value: ms to first SMS) | lead_reply | booking | opt_out
    metric: Mapped[str] = mapped_column(String(30))
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    occurred_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    value: Mapped[float | None] = mapped_column(Float, default=None)

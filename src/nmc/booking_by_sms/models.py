"""Where each thread's booking by SMS stands (`conv_booking_dialogs`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Index, Integer, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column


class BookingDialog(DefaultBase):
    """Where a thread's booking by SMS stands (`nmc.conversations.booking_dialog` has the transitions).

    One row per thread that ever asked to book; the row is locked while a caller's text is applied.
    """

    __tablename__ = "conv_booking_dialogs"
    __table_args__ = (Index("ix_conv_booking_dialogs_hold", "hold_id", postgresql_where=text("hold_id IS NOT NULL")),)

    thread_id: Mapped[UUID] = mapped_column(ForeignKey("conv_threads.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # idle | offered | held | booked
    state: Mapped[str] = mapped_column(String(10))
    job_type_id: Mapped[UUID | None] = mapped_column(default=None)
    # The open times last offered, in order: [{"resource_id": ..., "start": ...}] (UTC, ISO 8601).
    offers: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list, server_default=text("'[]'::jsonb"))
    # The hold placed for the caller (holds are deleted when booked or expired) and its start.
    hold_id: Mapped[UUID | None] = mapped_column(default=None)
    hold_start: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    booking_id: Mapped[UUID | None] = mapped_column(default=None)
    # Re-prompts in a row; past the limit the dialog stays quiet and the owner answers.
    reprompts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # The newest caller text applied: an older one delivered late changes nothing.
    last_message_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    updated_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), server_default=func.now(), onupdate=func.now()
    )

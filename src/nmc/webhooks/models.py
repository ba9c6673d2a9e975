"""The dedupe ledger every provider's webhooks go through."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import UUIDBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

MAX_IDEMPOTENCY_TOKEN_LENGTH = 255


class WebhookEvent(UUIDBase):
    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("provider", "external_id", name="uq_webhook_events_provider_external_id"),
        Index("ix_webhook_events_received_at", "received_at"),
        # A provider's own idempotency token (Twilio's I-Twilio-Idempotency-Token) is a second key.
        Index(
            "uq_webhook_events_provider_token",
            "provider",
            "idempotency_token",
            unique=True,
            postgresql_where=text("idempotency_token IS NOT NULL"),
        ),
    )

    provider: Mapped[str] = mapped_column(String(20))
    # What makes a delivery "the same" for its provider, e.g. `dial-status:CA123`.
    external_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[UUID | None] = mapped_column(ForeignKey("tenants.id", ondelete="SET NULL"), default=None)
    received_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    idempotency_token: Mapped[str | None] = mapped_column(String(MAX_IDEMPOTENCY_TOKEN_LENGTH), default=None)
    # The answer given the first time, repeated to a retried delivery.
    response_status: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    response_media_type: Mapped[str | None] = mapped_column(String(100), default=None)

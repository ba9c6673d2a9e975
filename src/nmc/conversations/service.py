"""Conversations: opt-outs and delivery status (the first SMS is in `first_sms.py`)."""

from __future__ import annotations

from uuid import UUID

import structlog
from sqlalchemy import case, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.conversations.models import (
    Message,
    OptOut,
)

log = structlog.get_logger(module="conversations")

# Delivery statuses in the order they can follow each other; a late callback never moves back.
STATUS_RANK = {
    "sending": 0, "accepted": 1, "queued": 2, "scheduled": 2, "sent": 3,
    "delivered": 4, "undelivered": 4, "failed": 4, "read": 5,
}  # fmt: skip


async def record_opt_out(session: AsyncSession, tenant_id: UUID, phone: str, source: str) -> None:
    await session.execute(
        insert(OptOut)
        .values(tenant_id=tenant_id, phone=phone, source=source)
        .on_conflict_do_nothing(constraint="uq_conv_opt_outs_tenant_phone")
    )


async def update_delivery_status(session: AsyncSession, message_sid: str, status: str, error_code: int | None) -> bool:
    """Apply a Twilio status callback; a late or repeated callback never moves a message backwards."""
    rank = STATUS_RANK.get(status)
    if rank is None:
        return False
    current_rank = case(STATUS_RANK, value=Message.status, else_=-1)
    result = await session.execute(
        update(Message)
        .where(Message.twilio_sid == message_sid, current_rank < rank)
        .values(status=status, error_code=error_code)
        .returning(Message.id)
    )
    return result.first() is not None

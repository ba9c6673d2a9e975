"""Texts to the business itself that other modules ask for (issue #15: the code that verifies a
forwarding number, which telephony's numbers API sends): queued in the caller's transaction in the
owner's own thread (the owner's number as the other party, where the inbox shows it) and sent through
the outbox like every other text (`sms.outbound_requested`, `outbound.py`, `messaging.decide`)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from nmc.conversations.outbound import queue_text
from nmc.conversations.threads import current_thread
from nmc.messaging import MessageKind


async def queue_owner_text(
    connection: asyncpg.Connection,
    *,
    tenant_id: UUID,
    to: str,
    from_: str,
    body: str,
    key: str,
    kind: MessageKind = MessageKind.FORWARDING_CODE,
) -> UUID | None:
    """The text's message id; None when a text with this idempotency key was queued already."""
    thread_id = await current_thread(connection, tenant_id, to, from_, opted_out=False)
    return await queue_text(
        connection, tenant_id=tenant_id, thread_id=thread_id, kind=kind, key=key, to=to, from_=from_, body=body
    )

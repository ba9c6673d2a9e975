"""Texts to the business itself that other modules ask for (issue #15: the code that verifies a
forwarding number, which telephony's numbers API sends): queued in the caller's transaction in the
owner's own thread (the owner's number as the other party, where the inbox shows it) and sent through
the outbox like every other text (`sms.outbound_requested`, `outbound.py`, `messaging.decide`)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import asyncpg
import structlog

from nmc.conversations.outbound import queue_text
from nmc.conversations.threads import current_thread
from nmc.messaging import MessageKind

log = structlog.get_logger(module="conversations")


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


# The owner's number (the alert number, else the first tenant number's forwarding number) and the
# tenant number that texts it.
_OWNER = """
    SELECT t.name, n.twilio_number, coalesce(s.owner_alert_number, n.forwarding_number) AS owner_number
    FROM tenant_profiles t
    JOIN LATERAL (
        SELECT twilio_number, forwarding_number FROM tenant_numbers
        WHERE tenant_id = t.id ORDER BY twilio_number LIMIT 1
    ) n ON true
    LEFT JOIN conv_settings s ON s.tenant_id = t.id
    WHERE t.id = $1
"""


async def tell_owner(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    *,
    kind: MessageKind,
    key: str,
    causation_id: str,
    text_for: Callable[[str], str],
) -> UUID | None:
    """Queue a notice to the business's owner (`text_for(business name)`); None when the tenant has no
    number to text from or to, or the notice was queued already."""
    owner = await connection.fetchrow(_OWNER, tenant_id)
    if owner is None or not owner["owner_number"]:
        log.warning("owner_notice.no_owner_number", notice=key)
        return None
    to, from_ = owner["owner_number"], owner["twilio_number"]
    thread_id = await current_thread(connection, tenant_id, to, from_, opted_out=False)
    return await queue_text(
        connection,
        tenant_id=tenant_id,
        thread_id=thread_id,
        kind=kind,
        key=key,
        to=to,
        from_=from_,
        body=text_for(owner["name"]),
        causation_id=causation_id,
    )

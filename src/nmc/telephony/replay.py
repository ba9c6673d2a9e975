"""`just replay-webhook ID`: run a stored Twilio payload through its handler again.

For a bug fixed after the fact. The effect functions are the same as for a live delivery, and their
own unique keys (call row state, first-SMS key) keep the exactly-once rules.
"""

from __future__ import annotations

from uuid import UUID

from nmc.db import session_scope
from nmc.identity.service import owner_of
from nmc.telephony.controllers import TWILIO_WEBHOOKS
from nmc.webhooks.service import get_delivery
from nmc.webhooks.twilio import parse_form_or_raise


class WebhookReplayError(ValueError):
    """The stored delivery cannot be replayed; the message says why."""


async def replay_stored_webhook(webhook_event_id: UUID) -> str:
    async with session_scope() as session:
        delivery = await get_delivery(session, webhook_event_id)
        if delivery is None:
            raise WebhookReplayError(f"no webhook_events row {webhook_event_id}")
        spec = TWILIO_WEBHOOKS.get(delivery.kind) if delivery.provider == "twilio" else None
        if spec is None:
            raise WebhookReplayError(f"no handler for {delivery.provider} {delivery.kind}")
        form = parse_form_or_raise(spec, delivery.payload)
        number = spec.number(form)
        owner = await owner_of(session, number) if number else None
        if number and owner is None:
            raise WebhookReplayError(f"no tenant owns the number of webhook {webhook_event_id} any more")
        await spec.apply(session, form, owner, delivery.received_at)
    return f"replayed {delivery.provider} {delivery.kind} {delivery.external_id}"

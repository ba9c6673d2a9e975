"""Calendar notices: the owner is told by text, once, when a calendar connection loses its grant.

Calendars cannot reach conversations (it sits below it); it publishes `calendar.needs_reauth` once per
loss of the grant (the connection's `reauth_notified_at`, cleared by a reconnect), and this subscriber
queues one owner alert with `queue_text` (kind `owner_alert`: exempt from quiet hours). The key names the
event, so a redelivery or a replay tells the owner once.

Like billing's notices, the text goes from the tenant's first number to the owner
(`owner_alert_number`, else that number's forwarding number), in the owner's own thread.
"""

from __future__ import annotations

import structlog

from nmc.conversations.owner_texts import tell_owner
from nmc.db import hot_transaction
from nmc.events import CalendarNeedsReauth
from nmc.messaging import MessageKind

log = structlog.get_logger(module="conversations")

PROVIDER_NAMES = {"google": "Google Calendar", "jobber": "Jobber"}


def reconnect_text(business_name: str, provider: str) -> str:
    name = PROVIDER_NAMES.get(provider, provider)
    return (
        f"{business_name}: NeverMissCall lost access to your {name}, so callers may be offered times you are "
        f"busy and new bookings will not appear there. Reconnect it under Settings > Calendars."
    )


async def tell_owner_calendar_needs_reauth(event: CalendarNeedsReauth) -> None:
    """`calendar.needs_reauth`: one owner alert per loss of the grant (keyed by the event)."""
    async with hot_transaction() as connection:
        queued = await tell_owner(
            connection,
            event.tenant_id,
            kind=MessageKind.OWNER_ALERT,
            key=f"calendar:needs_reauth:{event.event_id}",
            causation_id=str(event.event_id),
            text_for=lambda name: reconnect_text(name, event.provider),
        )
    if queued:
        log.info("calendar_notice.queued", connection_id=str(event.connection_id))

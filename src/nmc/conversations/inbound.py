"""Texts from callers: into the caller's current thread, opt-out keywords, HELP, owner alerts.

The webhook (`apply_inbound`, one transaction on the request's connection) records the message
(unique on its MessageSid), updates the thread (activity, unread count, cancels the follow-up),
records STOP/START at once (a text queued before the STOP is stopped at send time) and publishes
`message.received`. The subscriber `react_to_message` queues the help text and the owner alert
through the outbox like every other text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg
import msgspec
import structlog

from nmc.conversations.optouts import (
    ACTION_OF,
    OPTED_OUT_SQL,
    CallerAction,
    Keyword,
    keyword,
    record_opt_in,
    record_opt_out,
)
from nmc.conversations.outbound import queue_text
from nmc.conversations.templates import (
    DEFAULT_HELP,
    MergeValues,
    owner_alert_text,
    render_or_default,
)
from nmc.conversations.threads import current_thread, preview
from nmc.db import Transactional, hot_transaction, raw_connection
from nmc.events import MessageReceived, publish
from nmc.messaging import MessageKind
from nmc.observability.correlation import current_correlation_id

log = structlog.get_logger(module="conversations")

OWNER_ALERT_EVERY = "1 hour"


@dataclass(frozen=True)
class Media:
    url: str
    content_type: str | None


@dataclass(frozen=True)
class InboundSms:
    message_sid: str
    caller: str
    tenant_number: str
    body: str
    media: list[Media] = field(default_factory=list)
    opt_out_type: str | None = None


_BEFORE = f"""
    SELECT {OPTED_OUT_SQL.format(tenant="$1", phone="$2")} AS opted_out,
           EXISTS (SELECT 1 FROM conv_messages WHERE twilio_sid = $3) AS seen
"""
_INSERT = """
    INSERT INTO conv_messages (id, tenant_id, thread_id, idempotency_key, direction, kind, to_number, from_number,
                               body, media, status, twilio_sid, created_at)
    VALUES ($1, $2, $3, $4, 'inbound', 'inbound', $5, $6, $7, $8, 'received', $9, $10)
    ON CONFLICT DO NOTHING
    RETURNING id
"""
# first_inbound: the thread had no message from the caller before; texted_back: we sent it a first SMS.
_TOUCH_THREAD = """
    WITH before AS (SELECT last_inbound_at FROM conv_threads WHERE id = $1 FOR UPDATE)
    UPDATE conv_threads t SET
        last_activity_at = $3, last_inbound_at = $3, unread_count = t.unread_count + 1,
        last_message_preview = $2, follow_up_due_at = NULL
    FROM before
    WHERE t.id = $1
    RETURNING before.last_inbound_at IS NULL AS first_inbound,
              EXISTS (SELECT 1 FROM conv_messages m
                      WHERE m.thread_id = $1 AND m.kind = 'first_sms' AND m.twilio_sid IS NOT NULL) AS texted_back
"""


async def apply_inbound(session: Transactional, tenant_id: UUID, sms: InboundSms, received_at: datetime) -> bool:
    """Record a caller's text once (a replayed webhook finds its MessageSid and does nothing)."""
    connection = await raw_connection(session)
    before = await connection.fetchrow(_BEFORE, tenant_id, sms.caller, sms.message_sid)
    if before["seen"]:  # before the thread lookup: a replay must not open an empty thread
        log.info("sms.inbound_duplicate", sid=sms.message_sid)
        return False
    opted_out: bool = before["opted_out"]
    thread_id = await current_thread(connection, tenant_id, sms.caller, sms.tenant_number, opted_out=opted_out)
    media = [{"url": m.url, "content_type": m.content_type} for m in sms.media]
    message_id: UUID | None = await connection.fetchval(
        _INSERT,
        uuid4(),
        tenant_id,
        thread_id,
        f"inbound:{sms.message_sid}",
        sms.tenant_number,
        sms.caller,
        sms.body,
        msgspec.json.encode(media).decode() if media else None,
        sms.message_sid,
        received_at,
    )
    if message_id is None:
        log.info("sms.inbound_duplicate", sid=sms.message_sid)
        return False
    touched = await connection.fetchrow(_TOUCH_THREAD, thread_id, preview(sms.body, len(media)), received_at)
    verb = keyword(sms.body, sms.opt_out_type)
    source = "twilio_opt_out_type" if sms.opt_out_type else "keyword"
    if verb == Keyword.OPT_OUT:
        await record_opt_out(connection, tenant_id, sms.caller, source, message_id=message_id)
    elif verb == Keyword.OPT_IN and opted_out:
        await record_opt_in(connection, tenant_id, sms.caller, source, message_id=message_id)
    elif verb == Keyword.OPT_IN:
        verb = None  # "yes" from a caller who never opted out is a plain answer
    action = ACTION_OF[verb] if verb else None
    await publish(
        session,
        MessageReceived(
            tenant_id=tenant_id,
            thread_id=thread_id,
            message_id=message_id,
            caller=sms.caller,
            tenant_number=sms.tenant_number,
            num_media=len(media),
            first_reply=touched["first_inbound"] and touched["texted_back"] and action != CallerAction.OPTED_OUT,
            action=action,
            correlation_id=current_correlation_id(),
        ),
    )
    log.info("sms.inbound", caller=sms.caller, action=action, num_media=len(media))
    return True


# ---------------------------------------------------------------- reactions (worker)
_REACTION_CONTEXT = f"""
    SELECT t.name AS business_name, t.status AS tenant_status, th.caller, th.tenant_number,
           s.help_text, s.booking_prompt, coalesce(s.owner_alerts_enabled, true) AS alerts_enabled,
           coalesce(s.owner_alert_number, n.forwarding_number) AS alert_number,
           {OPTED_OUT_SQL.format(tenant="th.tenant_id", phone="th.caller")}
               AS opted_out,
           m.body
    FROM conv_threads th
    JOIN tenant_profiles t ON t.id = th.tenant_id
    JOIN conv_messages m ON m.id = $2
    LEFT JOIN conv_settings s ON s.tenant_id = th.tenant_id
    LEFT JOIN tenant_numbers n ON n.twilio_number = th.tenant_number
    WHERE th.id = $1
"""
# Never more than one alert per thread per hour: the claim (on the thread row, so concurrent messages
# queue behind it) and the alert share one transaction. The alert's key names the message that
# caused it, so a redelivered event (even hours later) never alerts again.
_CLAIM_ALERT = f"""
    UPDATE conv_threads SET last_alerted_at = now()
    WHERE id = $1 AND (last_alerted_at IS NULL OR last_alerted_at <= now() - interval '{OWNER_ALERT_EVERY}')
      AND NOT EXISTS (SELECT 1 FROM conv_messages WHERE idempotency_key = $2)
    RETURNING id
"""


def owner_alert_key(thread_id: UUID, message_id: UUID) -> str:
    return f"owner_alert:{thread_id}:{message_id}"


def _alert_wanted(event: MessageReceived, context: asyncpg.Record) -> bool:
    return (
        event.action in (None, CallerAction.HELP)
        and context["tenant_status"] == "active"
        and context["alerts_enabled"]
        and not context["opted_out"]
        and bool(context["alert_number"])
        and context["alert_number"] != context["caller"]  # the owner texting their own number
    )


async def react_to_message(event: MessageReceived) -> None:
    """The `message.received` subscriber: the help text for HELP/INFO, and the owner's alert."""
    async with hot_transaction() as connection:
        context = await connection.fetchrow(_REACTION_CONTEXT, event.thread_id, event.message_id)
        if context is None:
            return
        if event.action == CallerAction.HELP:
            values = MergeValues(
                business_name=context["business_name"],
                caller_number=context["caller"],
                booking_prompt=context["booking_prompt"],
            )
            await queue_text(
                connection,
                tenant_id=event.tenant_id,
                thread_id=event.thread_id,
                kind=MessageKind.HELP,
                key=f"help:{event.message_id}",
                to=context["caller"],
                from_=context["tenant_number"],
                body=render_or_default(context["help_text"], DEFAULT_HELP, values),
                causation_id=str(event.event_id),
            )
        key = owner_alert_key(event.thread_id, event.message_id)
        if _alert_wanted(event, context) and await connection.fetchval(_CLAIM_ALERT, event.thread_id, key):
            await queue_text(
                connection,
                tenant_id=event.tenant_id,
                thread_id=event.thread_id,
                kind=MessageKind.OWNER_ALERT,
                key=key,
                to=context["alert_number"],
                from_=context["tenant_number"],
                body=owner_alert_text(context["business_name"], context["caller"], context["body"], event.num_media),
                causation_id=str(event.event_id),
            )
            log.info("owner_alert.queued", caller=context["caller"])

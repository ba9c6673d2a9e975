"""Sending texts: the steps every outbound SMS shares, and the `sms.outbound_requested` subscriber.

Every text other than the first SMS (owner replies, follow-ups, help replies, owner alerts, booking
dialog replies) is queued
one way, `queue_text`: its `conv_messages` row (status `pending`, unique `idempotency_key`) and an
`sms.outbound_requested` event are written in the caller's transaction. `send_outbound` then sends
it once, with the first SMS's guards checked at send time (so a STOP that arrives while a text waits
stops it): tenant active, opt-out, known landline, `PAUSE_OUTBOUND_SMS` (waits as `paused`), quiet
hours (waits as `scheduled`; owner alerts and help replies are exempt). The row is committed as
`sending` before the Messages API request; a later attempt that finds `sending` looks the text up in
Twilio before sending again. 21610 records an opt-out, 30006 a landline; other 4xx park the event.

The first SMS (`first_sms.py`) has its own single-query planning, benchmarked, and shares the
sending, rejection and constants below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import structlog

from nmc.conversations.hours import quiet_until
from nmc.conversations.lines import LANDLINE, LANDLINE_SQL, mark_line_type
from nmc.conversations.models import DEFAULT_QUIET_END, DEFAULT_QUIET_START, PREVIEW_LENGTH
from nmc.conversations.optouts import OPTED_OUT_SQL, record_opt_out
from nmc.db import hot_transaction
from nmc.events.catalog import OutboundSmsRequested
from nmc.events.dispatcher import Deferred, PermanentFailure
from nmc.events.outbox import publish_on
from nmc.observability.correlation import current_correlation_id
from nmc.settings import Settings, get_settings
from nmc.telephony.sms import LANDLINE as LANDLINE_ERROR
from nmc.telephony.sms import UNSUBSCRIBED, Accepted, SmsRejected, get_sender

log = structlog.get_logger(module="conversations")

PAUSE_RECHECK = timedelta(seconds=15)
PAUSED_REASON = "PAUSE_OUTBOUND_SMS"
QUIET_HOURS_REASON = "quiet hours"
DONE_STATUSES = frozenset({"accepted", "queued", "sent", "delivered", "undelivered", "failed", "read", "suppressed"})

REPLY = "reply"
FOLLOW_UP = "follow_up"
HELP_REPLY = "help"
OWNER_ALERT = "owner_alert"
BOOKING = "booking"
# The owner wants to hear about a lead now; a caller who texted HELP or is booking asked for the answer now.
QUIET_HOURS_EXEMPT = frozenset({OWNER_ALERT, HELP_REPLY, BOOKING})
# Texts the business did not write by hand: the tenant's `suppress` quiet-hours policy applies.
AUTOMATED = frozenset({FOLLOW_UP})
# Texts that are thread activity when they go out (a reply already was when the owner wrote it).
TOUCH_THREAD_ON_SEND = frozenset({FOLLOW_UP, HELP_REPLY, BOOKING})


@dataclass(frozen=True)
class Outgoing:
    message_id: UUID
    to: str
    from_: str
    body: str
    send_started_at: datetime
    unknown_outcome: bool


def outgoing_from(row: asyncpg.Record, *, unknown_outcome: bool) -> Outgoing:
    return Outgoing(
        message_id=row["id"],
        to=row["to_number"],
        from_=row["from_number"],
        body=row["body"],
        send_started_at=row["send_started_at"],
        unknown_outcome=unknown_outcome,
    )


def quiet_window(row: Mapping[str, Any]) -> tuple[time | None, time | None]:
    """The tenant's quiet hours from a row outer-joined to `conv_settings` (`has_settings`); ours without one."""
    if row["has_settings"]:
        return row["quiet_hours_start"], row["quiet_hours_end"]
    return DEFAULT_QUIET_START, DEFAULT_QUIET_END


def quiet_hours_end(start: time | None, end: time | None, timezone: str, now: datetime) -> datetime | None:
    """A broken quiet-hours setting fails open: a paying tenant is never silently muted."""
    try:
        return quiet_until(start, end, timezone, now)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("sms.quiet_hours_broken", error=str(exc))
        return None


# ---------------------------------------------------------------- the shared sending steps
async def transmit(outgoing: Outgoing) -> Accepted:
    """Send once: after an unknown outcome, look the text up in Twilio before sending it again.

    Raises `SmsRejected` (4xx) or `SmsOutcomeUnknown` (5xx, timeout: retried by the dispatcher).
    """
    sender = get_sender()
    if outgoing.unknown_outcome:
        found = await sender.find_sent(outgoing.to, outgoing.from_, outgoing.body, outgoing.send_started_at)
        if found:
            log.info("sms.found_after_unknown_outcome", sid=found.sid)
            return found
    return await sender.send(outgoing.to, outgoing.from_, outgoing.body)


_REJECTED = "UPDATE conv_messages SET status = 'failed', error_code = $2 WHERE id = $1"


async def record_rejection(tenant_id: UUID, outgoing: Outgoing, exc: SmsRejected) -> None:
    """The message failed; 21610 opts the recipient out, 30006 marks a landline."""
    async with hot_transaction() as connection:
        await connection.execute(_REJECTED, outgoing.message_id, exc.code)
        if exc.code == UNSUBSCRIBED:
            await record_opt_out(connection, tenant_id, outgoing.to, "twilio_21610")
        elif exc.code == LANDLINE_ERROR:
            await mark_line_type(connection, outgoing.to, LANDLINE, "twilio_30006")
    log.warning("sms.rejected", code=exc.code, http_status=exc.http_status, to=outgoing.to)


def settle_rejection(exc: SmsRejected, what: str) -> None:
    """21610 and 30006 are answers (recorded; nothing to retry); any other 4xx parks the event."""
    if exc.code in (UNSUBSCRIBED, LANDLINE_ERROR):
        return
    raise PermanentFailure(f"Twilio rejected the {what} ({exc.http_status}, code {exc.code})") from exc


# ---------------------------------------------------------------- queueing a text
_QUEUE = """
    INSERT INTO conv_messages (id, tenant_id, thread_id, idempotency_key, direction, kind, to_number, from_number,
                               body, status)
    VALUES ($1, $2, $3, $4, 'outbound', $5, $6, $7, $8, 'pending')
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
"""


async def queue_text(
    connection: asyncpg.Connection,
    *,
    tenant_id: UUID,
    thread_id: UUID,
    kind: str,
    key: str,
    to: str,
    from_: str,
    body: str,
    causation_id: str | None = None,
) -> UUID | None:
    """Write the `pending` message and its `sms.outbound_requested` event in the caller's transaction.

    None when a text with this idempotency key exists already (nothing is queued twice).
    """
    message_id: UUID | None = await connection.fetchval(
        _QUEUE, uuid4(), tenant_id, thread_id, key, kind, to, from_, body
    )
    if message_id is None:
        return None
    await publish_on(
        connection,
        OutboundSmsRequested(
            tenant_id=tenant_id,
            message_id=message_id,
            thread_id=thread_id,
            kind=kind,
            correlation_id=current_correlation_id(),
            causation_id=causation_id,
        ),
    )
    return message_id


# ---------------------------------------------------------------- the subscriber
_PLAN = f"""
    SELECT m.id, m.status, m.kind, m.to_number, m.from_number, m.body, m.send_started_at,
           t.timezone, t.status AS tenant_status,
           s.tenant_id IS NOT NULL AS has_settings, s.quiet_hours_start, s.quiet_hours_end, s.quiet_hours_policy,
           {OPTED_OUT_SQL.format(tenant="m.tenant_id", phone="m.to_number")}
               AS opted_out,
           {LANDLINE_SQL.format(phone="m.to_number")} AS landline
    FROM conv_messages m
    JOIN tenant_profiles t ON t.id = m.tenant_id
    LEFT JOIN conv_settings s ON s.tenant_id = m.tenant_id
    WHERE m.id = $1
    FOR UPDATE OF m
"""
_SET_STATUS = """
    UPDATE conv_messages SET status = $2, suppressed_reason = $3, scheduled_for = $4, send_started_at = $5
    WHERE id = $1
"""
_ACCEPTED = "UPDATE conv_messages SET status = $2, twilio_sid = $3, sent_at = now() WHERE id = $1"
_TOUCH_THREAD = f"""
    UPDATE conv_threads SET last_activity_at = now(), last_message_preview = left($2, {PREVIEW_LENGTH})
    WHERE id = (SELECT thread_id FROM conv_messages WHERE id = $1)
"""


def blocked_recipient(tenant_status: str, opted_out: bool, landline: bool) -> str | None:
    """Why no text may go to this recipient now; every outbound text checks it at send time."""
    if tenant_status != "active":
        return "tenant_inactive"
    if opted_out:
        return "opted_out"
    if landline:
        return "landline"
    return None


async def plan_outbound(event: OutboundSmsRequested, settings: Settings) -> Outgoing | None:
    """Decide in one short transaction; return what to send, or None when nothing is to be sent.

    Raises `Deferred` (after committing the message as `paused` or `scheduled`) when it must wait.
    """
    now = datetime.now(UTC)
    verdict: Deferred | None = None
    async with hot_transaction() as connection:
        row = await connection.fetchrow(_PLAN, event.message_id)
        if row is None:
            log.warning("sms.outbound_message_gone", kind=event.kind)
            return None
        if row["status"] in DONE_STATUSES:
            return None
        if row["status"] == "sending":
            return outgoing_from(row, unknown_outcome=True)
        if reason := blocked_recipient(row["tenant_status"], row["opted_out"], row["landline"]):
            await connection.execute(_SET_STATUS, row["id"], "suppressed", reason, None, None)
            log.info("sms.suppressed", kind=row["kind"], reason=reason, to=row["to_number"])
            return None
        until = None
        if row["kind"] not in QUIET_HOURS_EXEMPT:
            until = quiet_hours_end(*quiet_window(row), row["timezone"], now)
        if settings.PAUSE_OUTBOUND_SMS:
            await connection.execute(_SET_STATUS, row["id"], "paused", None, None, None)
            verdict = Deferred(now + PAUSE_RECHECK, PAUSED_REASON)
        elif until is not None:
            if row["kind"] in AUTOMATED and row["quiet_hours_policy"] == "suppress":
                await connection.execute(_SET_STATUS, row["id"], "suppressed", "quiet_hours", None, None)
                return None
            await connection.execute(_SET_STATUS, row["id"], "scheduled", None, until, None)
            verdict = Deferred(until, QUIET_HOURS_REASON)
        else:
            await connection.execute(_SET_STATUS, row["id"], "sending", None, None, now)
            return Outgoing(row["id"], row["to_number"], row["from_number"], row["body"], now, unknown_outcome=False)
    raise verdict


async def send_outbound(event: OutboundSmsRequested) -> None:
    """The `sms.outbound_requested` subscriber: at most one text per queued message, whatever is retried."""
    outgoing = await plan_outbound(event, get_settings())
    if outgoing is None:
        return
    try:
        accepted = await transmit(outgoing)
    except SmsRejected as exc:
        await record_rejection(event.tenant_id, outgoing, exc)
        settle_rejection(exc, event.kind.replace("_", " "))
        return
    async with hot_transaction() as connection:
        await connection.execute(_ACCEPTED, outgoing.message_id, accepted.status, accepted.sid)
        if event.kind in TOUCH_THREAD_ON_SEND:
            await connection.execute(_TOUCH_THREAD, outgoing.message_id, outgoing.body)
    log.info("sms.sent", kind=event.kind, sid=accepted.sid)

"""Every text other than the first SMS: queued one way, planned with the shared decision, sent once.

Owner replies, follow-ups, help replies, owner alerts and the booking dialog's texts are queued with
`queue_text`: the `conv_messages` row (status `pending`, unique `idempotency_key`) and an
`sms.outbound_requested` event are written in the caller's transaction. `send_outbound` then reads
the message's facts in one query, asks `nmc.messaging.decide` (so a STOP that arrives while a text
waits stops it), records the verdict, and hands a text to send to `nmc.messaging.send_and_record`.
The first SMS (`first_sms.py`) has its own single planning query, benchmarked, and shares the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import structlog

from nmc.billing import ENTITLED_SQL, count_segments, usage_cte
from nmc.conversations.delivery import (
    EARLY_ERROR_CODE,
    EARLY_STATUS_CTE,
    ERROR_CODE_AFTER_EARLY,
    after_early_status,
    status_after_early,
)
from nmc.conversations.models import DEFAULT_QUIET_END, DEFAULT_QUIET_START, PREVIEW_LENGTH
from nmc.conversations.optouts import OPTED_OUT_SQL, record_opt_out
from nmc.db import hot_transaction
from nmc.events import Deferred, OutboundSmsRequested, publish_on
from nmc.messaging import (
    CIRCUIT_SQL,
    DONE_STATUSES,
    LANDLINE_SQL,
    PAUSE_SQL,
    UNSUBSCRIBED,
    Accepted,
    MessageKind,
    MessageStatus,
    Outgoing,
    Probe,
    Send,
    SendFacts,
    SmsRejected,
    Suppress,
    claim_probe,
    decide,
    send_and_record,
)
from nmc.observability.correlation import current_correlation_id
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="conversations")

# Texts that are thread activity when they go out (a reply already was when the owner wrote it).
TOUCH_THREAD_ON_SEND = frozenset({MessageKind.FOLLOW_UP, MessageKind.HELP, MessageKind.BOOKING})


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


_REJECTED = "UPDATE conv_messages SET status = 'failed', error_code = $2 WHERE id = $1"
# Twilio did not create the text (a rate limit, or our account refused): it waits to be planned again.
_WAITING = "UPDATE conv_messages SET status = $2, send_started_at = NULL WHERE id = $1 AND status = 'sending'"


async def record_rejection(
    connection: asyncpg.Connection, tenant_id: UUID, outgoing: Outgoing, exc: SmsRejected
) -> None:
    """The message failed; 21610 opts the recipient out (messaging marks a 30006 landline itself)."""
    await connection.execute(_REJECTED, outgoing.message_id, exc.code)
    if exc.code == UNSUBSCRIBED:
        await record_opt_out(connection, tenant_id, outgoing.to, "twilio_21610")


async def record_waiting(connection: asyncpg.Connection, outgoing: Outgoing, status: MessageStatus) -> None:
    """Twilio did not create the text: back to `pending` (rate limit) or `paused` (sending circuit open)."""
    await connection.execute(_WAITING, outgoing.message_id, status)


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
    kind: MessageKind,
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
           {LANDLINE_SQL.format(phone="m.to_number")} AS landline,
           {CIRCUIT_SQL} AS circuit_probe_at,
           {PAUSE_SQL} AS operator_paused,
           {ENTITLED_SQL.format(tenant="m.tenant_id")} AS entitled
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
# With a status callback that came before the SID (`conv_early_statuses`): applied, its error code returned;
# and the text's usage for billing's meter (`usage_cte`: $4 its segments, $5 the tenant), in the same statement.
_ACCEPTED = f"""
    WITH {EARLY_STATUS_CTE},
         {usage_cte("usage", message_id="$1", tenant_id="$5", segments="$4")}
    UPDATE conv_messages SET status = {status_after_early("$2")}, error_code = {ERROR_CODE_AFTER_EARLY},
                             twilio_sid = $3, sent_at = now()
    WHERE id = $1
    RETURNING {EARLY_ERROR_CODE}
"""
_TOUCH_THREAD = f"""
    UPDATE conv_threads SET last_activity_at = now(), last_message_preview = left($2, {PREVIEW_LENGTH})
    WHERE id = (SELECT thread_id FROM conv_messages WHERE id = $1)
"""


def _facts(row: asyncpg.Record) -> SendFacts:
    return SendFacts(
        kind=MessageKind(row["kind"]),
        tenant_status=row["tenant_status"],
        opted_out=row["opted_out"],
        landline=row["landline"],
        timezone=row["timezone"],
        quiet_hours=quiet_window(row),
        quiet_policy=row["quiet_hours_policy"] or "delay",
        circuit_probe_at=row["circuit_probe_at"],
        operator_paused=row["operator_paused"],
        entitled=row["entitled"] or not get_settings().BILLING_ENABLED,
    )


async def plan_outbound(event: OutboundSmsRequested, settings: Settings) -> Outgoing | None:
    """Decide in one short transaction; return what to send, or None when nothing is to be sent.

    Raises `Deferred` (after committing the message as `paused` or `scheduled`) when it must wait.
    """
    now = datetime.now(UTC)
    async with hot_transaction() as connection:
        row = await connection.fetchrow(_PLAN, event.message_id)
        if row is None:
            log.warning("sms.outbound_message_gone", kind=event.kind)
            return None
        if row["status"] in DONE_STATUSES:
            return None
        if row["status"] == MessageStatus.SENDING:
            return outgoing_from(row, unknown_outcome=True)
        verdict = decide(_facts(row), paused=settings.PAUSE_OUTBOUND_SMS, now=now)
        if isinstance(verdict, Probe):  # the sending circuit is open: one sender at a time tries Twilio
            verdict = await claim_probe(connection, now)
        if isinstance(verdict, Send):
            await connection.execute(_SET_STATUS, row["id"], MessageStatus.SENDING, None, None, now)
            return Outgoing(
                row["id"], row["to_number"], row["from_number"], row["body"], now, unknown_outcome=False,
                probe=verdict.probe,
            )  # fmt: skip
        if isinstance(verdict, Suppress):
            await connection.execute(_SET_STATUS, row["id"], MessageStatus.SUPPRESSED, verdict.reason, None, None)
            log.info("sms.suppressed", kind=row["kind"], reason=verdict.reason, to=row["to_number"])
            return None
        await connection.execute(_SET_STATUS, row["id"], verdict.status, None, verdict.scheduled_for, None)
    raise Deferred(verdict.until, verdict.reason)


async def send_outbound(event: OutboundSmsRequested) -> None:
    """The `sms.outbound_requested` subscriber: at most one text per queued message, whatever is retried."""
    outgoing = await plan_outbound(event, get_settings())
    if outgoing is None:
        return

    async def accepted(connection: asyncpg.Connection, answer: Accepted) -> None:
        async with connection.transaction():
            early_error_code = await connection.fetchval(
                _ACCEPTED,
                outgoing.message_id,
                answer.status,
                answer.sid,
                count_segments(outgoing.body),
                event.tenant_id,
            )
            await after_early_status(connection, early_error_code, outgoing.to)
            if event.kind in TOUCH_THREAD_ON_SEND:
                await connection.execute(_TOUCH_THREAD, outgoing.message_id, outgoing.body)
        log.info("sms.sent", kind=event.kind, sid=answer.sid)

    async def rejected(connection: asyncpg.Connection, exc: SmsRejected) -> None:
        await record_rejection(connection, event.tenant_id, outgoing, exc)

    async def waiting(connection: asyncpg.Connection, status: MessageStatus) -> None:
        await record_waiting(connection, outgoing, status)

    await send_and_record(
        outgoing, what=event.kind.replace("_", " "), accepted=accepted, rejected=rejected, waiting=waiting
    )

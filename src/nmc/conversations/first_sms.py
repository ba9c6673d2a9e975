"""The first SMS after a missed call: guards, templates, exactly-once sending.

Exactly once lives in Postgres: the message row's `idempotency_key` (`first_sms:<call id>`) is
unique, and the row is committed as `sending` before the Messages API request. A later attempt that
finds `sending` does not know whether Twilio created the text, so it looks in Twilio's Messages list
first and only sends if the text is not there (`outbound.transmit`, shared with every other text).

This is the worker's first-SMS path, measured against a 15 ms P95 budget: it runs plain SQL on the
hot asyncpg pool (`nmc.db.hot_transaction`), two short transactions around the Twilio request. What
else the first SMS feeds rides statements it already runs: the KPI projection's missed-call fact is
written by the context query, its texted-back fact by the acceptance update, and the follow-up is
scheduled by the thread update after acceptance (no extra round trip, no extra dispatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from nmc.conversations.kpis import MISSED_CALL, TEXTED_BACK
from nmc.conversations.lines import LANDLINE_SQL, ensure_line_type
from nmc.conversations.models import PREVIEW_LENGTH
from nmc.conversations.optouts import OPTED_OUT_SQL
from nmc.conversations.outbound import (
    DONE_STATUSES,
    PAUSE_RECHECK,
    PAUSED_REASON,
    QUIET_HOURS_REASON,
    Outgoing,
    blocked_recipient,
    outgoing_from,
    quiet_hours_end,
    quiet_window,
    record_rejection,
    settle_rejection,
    transmit,
)
from nmc.conversations.templates import (
    DEFAULT_AFTER_HOURS,
    DEFAULT_BUSINESS_HOURS,
    MergeValues,
    render_or_default,
)
from nmc.conversations.threads import current_thread
from nmc.db import hot_transaction
from nmc.events.catalog import CallMissed, FirstSmsSent
from nmc.events.dispatcher import Deferred
from nmc.events.outbox import publish_on
from nmc.settings import Settings, get_settings
from nmc.telephony.sms import Accepted, SmsRejected
from nmc.weekly_hours import open_at

log = structlog.get_logger(module="conversations")


@dataclass(frozen=True)
class FirstSmsContext:
    """What the guards and the template need, read in one query."""

    business_name: str
    timezone: str
    business_hours: dict[str, Any]
    tenant_status: str
    opted_out: bool
    landline: bool
    texted_recently: bool
    template_business_hours: str | None
    template_after_hours: str | None
    booking_prompt: str | None
    quiet_hours: tuple[time | None, time | None]
    quiet_policy: str


_EXISTING = """
    SELECT id, status, thread_id, to_number, from_number, body, send_started_at
    FROM conv_messages WHERE idempotency_key = $1 FOR UPDATE
"""
# The KPI projection's missed-call fact (see `kpis.py`) rides this query: no extra round trip, and
# it is recorded whatever becomes of the text (deferred, suppressed, parked).
_CONTEXT = f"""
    WITH missed_call_fact AS (
        INSERT INTO conv_kpi_facts (event_id, metric, tenant_id, occurred_at) VALUES ($4, '{MISSED_CALL}', $1, $5)
        ON CONFLICT DO NOTHING
    )
    SELECT t.name, t.timezone, t.business_hours, t.status,
           s.tenant_id IS NOT NULL AS has_settings, s.first_sms_business_hours, s.first_sms_after_hours,
           s.booking_prompt, s.quiet_hours_start, s.quiet_hours_end, s.quiet_hours_policy,
           {OPTED_OUT_SQL.format(tenant="t.id", phone="$2")} AS opted_out,
           {LANDLINE_SQL.format(phone="$2")} AS landline,
           EXISTS (
               SELECT 1 FROM conv_messages m
               WHERE m.tenant_id = t.id AND m.to_number = $2 AND m.kind = 'first_sms'
                 AND m.status <> 'suppressed' AND m.call_id <> $3
                 AND m.created_at > now() - make_interval(mins => coalesce(s.cooldown_minutes, 60))
           ) AS texted_recently
    FROM tenant_profiles t LEFT JOIN conv_settings s ON s.tenant_id = t.id
    WHERE t.id = $1
"""
_UPSERT_MESSAGE = """
    INSERT INTO conv_messages (id, tenant_id, thread_id, call_id, idempotency_key, direction, kind,
                               to_number, from_number, body, status, suppressed_reason, scheduled_for,
                               send_started_at)
    VALUES ($1, $2, $3, $4, $5, 'outbound', 'first_sms', $6, $7, $8, $9, $10, $11, $12)
    ON CONFLICT (idempotency_key) DO UPDATE SET
        status = EXCLUDED.status, body = EXCLUDED.body, suppressed_reason = EXCLUDED.suppressed_reason,
        scheduled_for = EXCLUDED.scheduled_for, send_started_at = EXCLUDED.send_started_at
    RETURNING id, send_started_at
"""
# With the KPI projection's texted-back fact (keyed by the `sms.first_sent` event published beside it).
_ACCEPTED = f"""
    WITH texted_back_fact AS (
        INSERT INTO conv_kpi_facts (event_id, metric, tenant_id, occurred_at, value)
        VALUES ($5, '{TEXTED_BACK}', $6, $7, $4)
        ON CONFLICT DO NOTHING
    )
    UPDATE conv_messages SET status = $2, twilio_sid = $3, sent_at = now(), latency_ms = $4 WHERE id = $1
"""
# The thread shows the text; with follow-ups on (`follow_up_delay_minutes`), the thread's one
# follow-up is scheduled here (the worker's follow-up sweep re-checks it when due).
_TOUCH_THREAD = f"""
    UPDATE conv_threads t SET
        last_activity_at = now(),
        last_message_preview = left($2, {PREVIEW_LENGTH}),
        follow_up_due_at = CASE
            WHEN t.status = 'open' AND t.follow_up_due_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM conv_messages f WHERE f.thread_id = t.id AND f.kind = 'follow_up')
            THEN now() + (SELECT make_interval(mins => s.follow_up_delay_minutes)
                          FROM conv_settings s WHERE s.tenant_id = t.tenant_id)
            ELSE t.follow_up_due_at
        END
    WHERE t.id = (SELECT thread_id FROM conv_messages WHERE id = $1)
"""


def first_sms_key(call_id: UUID) -> str:
    return f"first_sms:{call_id}"


async def load_context(connection: asyncpg.Connection, event: CallMissed) -> FirstSmsContext:
    row = await connection.fetchrow(
        _CONTEXT, event.tenant_id, event.caller, event.call_id, event.event_id, event.occurred_at
    )
    return FirstSmsContext(
        business_name=row["name"],
        timezone=row["timezone"],
        business_hours=row["business_hours"],
        tenant_status=row["status"],
        opted_out=row["opted_out"],
        landline=row["landline"],
        texted_recently=row["texted_recently"],
        template_business_hours=row["first_sms_business_hours"],
        template_after_hours=row["first_sms_after_hours"],
        booking_prompt=row["booking_prompt"],
        quiet_hours=quiet_window(row),
        quiet_policy=row["quiet_hours_policy"] or "delay",
    )


def first_sms_body(context: FirstSmsContext, event: CallMissed, now: datetime) -> str:
    """Business-hours or after-hours template; a template we cannot fill falls back to the default."""
    try:
        in_hours = open_at(context.business_hours, ZoneInfo(context.timezone), now)
    except (ValueError, KeyError, TypeError) as exc:  # a broken setting never blocks the text
        log.warning("first_sms.business_hours_broken", error=str(exc))
        in_hours = True
    default = DEFAULT_BUSINESS_HOURS if in_hours else DEFAULT_AFTER_HOURS
    chosen = context.template_business_hours if in_hours else context.template_after_hours
    values = MergeValues(
        business_name=context.business_name,
        caller_number=event.caller,
        booking_prompt=context.booking_prompt,
    )
    return render_or_default(chosen, default, values)


def suppression(context: FirstSmsContext) -> str | None:
    """The guards of every outbound text, plus the first SMS's own cooldown per caller."""
    blocked = blocked_recipient(context.tenant_status, context.opted_out, context.landline)
    return blocked or ("cooldown" if context.texted_recently else None)


async def _record(
    connection: asyncpg.Connection,
    event: CallMissed,
    thread_id: UUID,
    body: str,
    status: str,
    *,
    reason: str | None = None,
    scheduled_for: datetime | None = None,
    send_started_at: datetime | None = None,
) -> asyncpg.Record:
    return await connection.fetchrow(
        _UPSERT_MESSAGE,
        uuid4(),
        event.tenant_id,
        thread_id,
        event.call_id,
        first_sms_key(event.call_id),
        event.caller,
        event.tenant_number,
        body,
        status,
        reason,
        scheduled_for,
        send_started_at,
    )


async def plan_first_sms(event: CallMissed, settings: Settings) -> Outgoing | None:
    """Decide in one short transaction; return what to send, or None when nothing is to be sent.

    Raises `Deferred` (after committing the message as `paused` or `scheduled`) when it must wait.
    """
    now = datetime.now(UTC)
    verdict: Deferred | None = None
    async with hot_transaction() as connection:
        existing = await connection.fetchrow(_EXISTING, first_sms_key(event.call_id))
        if existing is not None and existing["status"] in DONE_STATUSES:
            return None
        if existing is not None and existing["status"] == "sending":
            return outgoing_from(existing, unknown_outcome=True)
        context = await load_context(connection, event)
        thread_id = existing["thread_id"] if existing else await current_thread(
            connection, event.tenant_id, event.caller, event.tenant_number, opted_out=context.opted_out
        )  # fmt: skip
        body = first_sms_body(context, event, now)
        if reason := suppression(context):
            await _record(connection, event, thread_id, body, "suppressed", reason=reason)
            log.info("first_sms.suppressed", reason=reason, caller=event.caller)
            return None
        if settings.PAUSE_OUTBOUND_SMS:
            await _record(connection, event, thread_id, body, "paused")
            verdict = Deferred(now + PAUSE_RECHECK, PAUSED_REASON)
        elif until := quiet_hours_end(*context.quiet_hours, context.timezone, now):
            if context.quiet_policy == "suppress":
                await _record(connection, event, thread_id, body, "suppressed", reason="quiet_hours")
                return None
            await _record(connection, event, thread_id, body, "scheduled", scheduled_for=until)
            verdict = Deferred(until, QUIET_HOURS_REASON)
        else:
            message = await _record(connection, event, thread_id, body, "sending", send_started_at=now)
            return Outgoing(message["id"], event.caller, event.tenant_number, body, now, unknown_outcome=False)
    raise verdict


async def send_first_sms(event: CallMissed) -> None:
    """The `call.missed` subscriber: at most one first SMS per missed call, whatever is retried."""
    settings = get_settings()
    if settings.LOOKUP_LINE_TYPE_BEFORE_FIRST_SMS:
        await ensure_line_type(event.caller)  # cached: the guards below read the answer
    outgoing = await plan_first_sms(event, settings)
    if outgoing is None:
        return
    try:
        accepted = await transmit(outgoing)
    except SmsRejected as exc:
        await record_rejection(event.tenant_id, outgoing, exc)
        settle_rejection(exc, "first SMS")
        return
    await _record_accepted(event, outgoing, accepted)


async def _record_accepted(event: CallMissed, outgoing: Outgoing, accepted: Accepted) -> None:
    latency_ms = (datetime.now(UTC) - event.webhook_received_at).total_seconds() * 1000
    sent = FirstSmsSent(
        tenant_id=event.tenant_id,
        call_id=event.call_id,
        message_id=outgoing.message_id,
        latency_ms=latency_ms,
        correlation_id=event.correlation_id,
        causation_id=str(event.event_id),
    )
    async with hot_transaction() as connection:
        await connection.execute(
            _ACCEPTED,
            outgoing.message_id,
            accepted.status,
            accepted.sid,
            latency_ms,
            sent.event_id,
            sent.tenant_id,
            sent.occurred_at,
        )
        await connection.execute(_TOUCH_THREAD, outgoing.message_id, outgoing.body)
        await publish_on(connection, sent)
    log.info("first_sms.sent", latency_ms=round(latency_ms, 1), sid=accepted.sid)

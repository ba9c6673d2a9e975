"""The first SMS after a missed call: its facts in one query, its template, the shared decision and sending.

Exactly once lives in Postgres: the message row's `idempotency_key` (`first_sms:<call id>`) is
unique, and the row is committed as `sending` before the Messages API request. A later attempt that
finds `sending` does not know whether Twilio created the text, so it looks in Twilio's Messages list
first and only sends if the text is not there (`nmc.messaging.send_and_record`, shared with every
other text; the decision is `nmc.messaging.decide`, too).

This is the worker's first-SMS path, measured against a 15 ms P95 budget: it runs plain SQL on the
hot asyncpg pool, three autocommitted statements around the Twilio request, no BEGIN or COMMIT
(ADR 0020): the context query, the message written as `sending` only over the row the context query
saw (a text changed in between is planned again), and, once Twilio took it, one acceptance statement.
What else the first SMS feeds rides those statements: the KPI projection's missed-call fact is
written by the context query; its texted-back fact, the follow-up (the thread update), the
`sms.first_sent` outbox row and the settling of `call.missed` (`published_cte`) by the acceptance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

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
from nmc.conversations.metrics import DELIBERATE_WAITS, latency_rollup_cte
from nmc.conversations.models import PREVIEW_LENGTH
from nmc.conversations.optouts import OPTED_OUT_SQL
from nmc.conversations.outbound import quiet_window, record_rejection, record_waiting
from nmc.conversations.templates import (
    DEFAULT_FIRST_SMS_AFTER_HOURS,
    DEFAULT_FIRST_SMS_BUSINESS_HOURS,
    MergeValues,
    render_or_default,
)
from nmc.conversations.threads import current_thread, current_thread_cte
from nmc.db import ASYNC_COMMIT, hot_connection
from nmc.events import CallMissed, Deferred, FirstSmsSent, published_cte, published_in_statement, published_values
from nmc.kpis import Metric, fact_cte
from nmc.messaging import (
    CIRCUIT_SQL,
    DONE_STATUSES,
    LANDLINE_SQL,
    PAUSE_SQL,
    Accepted,
    MessageKind,
    MessageStatus,
    Outgoing,
    Probe,
    Send,
    SendFacts,
    SmsRejected,
    Suppress,
    Wait,
    claim_probe,
    decide,
    ensure_line_type,
    send_and_record,
)
from nmc.settings import Settings, get_settings
from nmc.weekly_hours import open_at

log = structlog.get_logger(module="conversations")


@dataclass(frozen=True)
class FirstSmsContext:
    """What the decision and the template need, read in one query."""

    business_name: str
    business_hours: dict[str, Any]
    booking_prompt: str | None
    template_business_hours: str | None
    template_after_hours: str | None
    facts: SendFacts
    current_thread_id: UUID | None = None  # None: an earlier attempt's thread, or a concurrent creation


# The message of an earlier attempt: what it became decides before anything else. A CTE of the context
# query (one round trip); FOR UPDATE waits for a writer still at it and reads what it wrote (READ
# COMMITTED), and the plan's write is conditional on this status (the outbox claim keeps a second
# dispatcher away; the condition covers what the claim does not: a lease run out, an operator's resume).
_EXISTING = """existing AS (
    SELECT id, status, thread_id, to_number, from_number, body, send_started_at
    FROM conv_messages WHERE idempotency_key = $6 FOR UPDATE
)"""
# The KPI projection's missed-call fact rides this query: no extra round trip, and it is recorded
# whatever becomes of the text (deferred, suppressed, parked).
_MISSED_CALL_FACT = fact_cte("missed_call_fact", Metric.MISSED_CALL, event_id="$4", tenant_id="$1", occurred_at="$5")
# The caller's current thread, created when there is no earlier attempt (which has its thread).
_THREAD = current_thread_cte(
    "thread",
    thread_id="$7",
    tenant_id="$1",
    caller="$2::text",  # text, as the rest of the query reads it (the column is varchar)
    tenant_number="$8",
    status=f"CASE WHEN {OPTED_OUT_SQL.format(tenant='$1', phone='$2')} THEN 'opted_out' ELSE 'open' END",
    unless="EXISTS (SELECT 1 FROM existing)",
)
# Its writes (the missed-call fact, a new thread) commit without waiting for the disk (ADR 0021): a retry
# redoes them, and the message written as `sending` commits synchronously before Twilio is asked.
_CONTEXT = f"""
    WITH {_MISSED_CALL_FACT}, {_EXISTING}, {_THREAD}, {ASYNC_COMMIT}
    SELECT (SELECT id FROM thread) AS current_thread_id,
           e.id AS existing_id, e.status AS existing_status, e.thread_id AS existing_thread_id,
           e.to_number AS existing_to, e.from_number AS existing_from, e.body AS existing_body,
           e.send_started_at AS existing_send_started_at,
           t.name, t.timezone, t.business_hours, t.status,
           s.tenant_id IS NOT NULL AS has_settings, s.first_sms_business_hours, s.first_sms_after_hours,
           s.booking_prompt, s.quiet_hours_start, s.quiet_hours_end, s.quiet_hours_policy,
           {OPTED_OUT_SQL.format(tenant="t.id", phone="$2")} AS opted_out,
           {LANDLINE_SQL.format(phone="$2")} AS landline,
           {CIRCUIT_SQL} AS circuit_probe_at,
           {PAUSE_SQL} AS operator_paused,
           {ENTITLED_SQL.format(tenant="t.id")} AS entitled,
           EXISTS (
               SELECT 1 FROM conv_messages m
               WHERE m.tenant_id = t.id AND m.to_number = $2 AND m.kind = 'first_sms'
                 AND m.status <> 'suppressed' AND m.call_id <> $3
                 AND m.created_at > now() - make_interval(mins => coalesce(s.cooldown_minutes, 60))
           ) AS texted_recently
    FROM tenant_profiles t LEFT JOIN conv_settings s ON s.tenant_id = t.id LEFT JOIN existing e ON true
         CROSS JOIN async_commit
    WHERE t.id = $1
"""
_UPSERT_MESSAGE = """
    INSERT INTO conv_messages (id, tenant_id, thread_id, call_id, idempotency_key, direction, kind,
                               to_number, from_number, body, status, suppressed_reason, scheduled_for,
                               send_started_at, held_on_purpose)
    VALUES ($1, $2, $3, $4, $5, 'outbound', 'first_sms', $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (idempotency_key) DO UPDATE SET
        status = EXCLUDED.status, body = EXCLUDED.body, suppressed_reason = EXCLUDED.suppressed_reason,
        scheduled_for = EXCLUDED.scheduled_for, send_started_at = EXCLUDED.send_started_at,
        held_on_purpose = conv_messages.held_on_purpose OR EXCLUDED.held_on_purpose
    WHERE conv_messages.status = $14  -- the status the plan read; NULL (no row was read): never
    RETURNING id, send_started_at
"""
# The thread shows the text; with follow-ups on (`follow_up_delay_minutes`), the thread's one
# follow-up is scheduled here (the worker's follow-up sweep re-checks it when due). A CTE of `_ACCEPTED`:
# it reads the message's thread as it was before that statement's update (which leaves thread_id alone).
_TOUCH_THREAD = f"""touched_thread AS (
    UPDATE conv_threads t SET
        last_activity_at = now(),
        last_message_preview = left($9, {PREVIEW_LENGTH}),
        follow_up_due_at = CASE
            WHEN t.status = 'open' AND t.follow_up_due_at IS NULL
                 AND NOT EXISTS (SELECT 1 FROM conv_messages f WHERE f.thread_id = t.id AND f.kind = 'follow_up')
            THEN now() + (SELECT make_interval(mins => s.follow_up_delay_minutes)
                          FROM conv_settings s WHERE s.tenant_id = t.tenant_id)
            ELSE t.follow_up_due_at
        END
    WHERE t.id = (SELECT thread_id FROM conv_messages WHERE id = $1)
)"""
# With the KPI projection's texted-back fact (keyed by the `sms.first_sent` event published beside it),
# and a status callback that came before the SID (`conv_early_statuses`: applied, its error code returned), the
# `first_sms_latency_seconds` roll-up (`conv_first_sms_latency`, issue #13) and the thread: one round trip.
_TEXTED_BACK_FACT = fact_cte(
    "texted_back_fact", Metric.TEXTED_BACK, event_id="$5", tenant_id="$6", occurred_at="$7", value="$4"
)
_ACCEPTED = f"""
    WITH {_TEXTED_BACK_FACT},
         {usage_cte("usage", message_id="$1", tenant_id="$6", segments="$8")},
         {latency_rollup_cte("latency_rollup", message_id="$1", latency_ms="$4")},
         {_TOUCH_THREAD},
         {EARLY_STATUS_CTE},
         {published_cte("first_sent", 10)}
    UPDATE conv_messages SET status = {status_after_early("$2")}, error_code = {ERROR_CODE_AFTER_EARLY},
                             twilio_sid = $3, sent_at = now(), latency_ms = $4
    WHERE id = $1
    RETURNING {EARLY_ERROR_CODE}
"""


PLAN_ATTEMPTS = 3


def first_sms_key(call_id: UUID) -> str:
    return f"first_sms:{call_id}"


@dataclass(frozen=True)
class EarlierAttempt:
    """The first SMS's message row from an earlier attempt at this missed call."""

    status: str
    thread_id: UUID
    row: asyncpg.Record  # the context row, with the message's columns as `existing_*`

    def resumed(self) -> Outgoing:
        """A message left `sending`: sent again only once Twilio's list shows it is not there."""
        row = self.row
        return Outgoing(
            row["existing_id"],
            row["existing_to"],
            row["existing_from"],
            row["existing_body"],
            row["existing_send_started_at"],
            unknown_outcome=True,
        )


async def load_context(
    connection: asyncpg.Connection, event: CallMissed
) -> tuple[FirstSmsContext, EarlierAttempt | None]:
    """The decision's facts and the message of an earlier attempt, if any (locked), in one query."""
    key = first_sms_key(event.call_id)
    row = await connection.fetchrow(
        _CONTEXT,
        event.tenant_id,
        event.caller,
        event.call_id,
        event.event_id,
        event.occurred_at,
        key,
        uuid4(),
        event.tenant_number,
    )
    if row is None:
        raise LookupError(f"tenant {event.tenant_id} has no profile")
    earlier = None
    if row["existing_id"] is not None:
        earlier = EarlierAttempt(row["existing_status"], row["existing_thread_id"], row)
    return _context(row), earlier


def _context(row: asyncpg.Record) -> FirstSmsContext:
    return FirstSmsContext(
        current_thread_id=row["current_thread_id"],
        business_name=row["name"],
        business_hours=row["business_hours"],
        booking_prompt=row["booking_prompt"],
        template_business_hours=row["first_sms_business_hours"],
        template_after_hours=row["first_sms_after_hours"],
        facts=SendFacts(
            kind=MessageKind.FIRST_SMS,
            tenant_status=row["status"],
            opted_out=row["opted_out"],
            landline=row["landline"],
            timezone=row["timezone"],
            quiet_hours=quiet_window(row),
            quiet_policy=row["quiet_hours_policy"] or "delay",
            texted_recently=row["texted_recently"],
            circuit_probe_at=row["circuit_probe_at"],
            operator_paused=row["operator_paused"],
            entitled=row["entitled"] or not get_settings().BILLING_ENABLED,
        ),
    )


def first_sms_body(context: FirstSmsContext, event: CallMissed, now: datetime) -> str:
    """Business-hours or after-hours template; a template we cannot fill falls back to the default."""
    try:
        in_hours = open_at(context.business_hours, ZoneInfo(context.facts.timezone), now)
    except (ValueError, KeyError, TypeError) as exc:  # a broken setting never blocks the text
        log.warning("first_sms.business_hours_broken", error=str(exc))
        in_hours = True
    default = DEFAULT_FIRST_SMS_BUSINESS_HOURS if in_hours else DEFAULT_FIRST_SMS_AFTER_HOURS
    chosen = context.template_business_hours if in_hours else context.template_after_hours
    values = MergeValues(
        business_name=context.business_name,
        caller_number=event.caller,
        booking_prompt=context.booking_prompt,
    )
    return render_or_default(chosen, default, values)


class _Changed(Exception):
    """The text changed between the plan's read and its write (a concurrent writer): plan again."""


async def _record(
    connection: asyncpg.Connection,
    event: CallMissed,
    existing: EarlierAttempt | None,
    thread_id: UUID,
    body: str,
    status: MessageStatus,
    *,
    reason: str | None = None,
    scheduled_for: datetime | None = None,
    send_started_at: datetime | None = None,
    held_on_purpose: bool = False,
) -> asyncpg.Record:
    """Write the text as decided, only over the row the decision read (`existing`: its status, or no row)."""
    written = await connection.fetchrow(
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
        held_on_purpose,
        existing.status if existing else None,
    )
    if written is None:
        raise _Changed
    return written


async def plan_first_sms(event: CallMissed, settings: Settings) -> Outgoing | None:
    """Decide; return what to send, or None when nothing is to be sent.

    Raises `Deferred` (after committing the message as `paused` or `scheduled`) when it must wait.
    Two autocommitted statements, not a transaction (two round trips fewer per text): the write is
    conditional on the row the read saw, and a text changed in between is planned again.
    """
    async with hot_connection() as connection:
        for _ in range(PLAN_ATTEMPTS):
            try:
                return await _plan(connection, event, settings)
            except _Changed:
                continue
    raise RuntimeError("the first SMS kept changing under concurrent writes")


async def _plan(connection: asyncpg.Connection, event: CallMissed, settings: Settings) -> Outgoing | None:
    now = datetime.now(UTC)
    context, existing = await load_context(connection, event)
    if existing is not None and existing.status in DONE_STATUSES:
        return None
    if existing is not None and existing.status == MessageStatus.SENDING:
        return existing.resumed()
    thread_id = existing.thread_id if existing else context.current_thread_id or await current_thread(
        connection, event.tenant_id, event.caller, event.tenant_number, opted_out=context.facts.opted_out
    )  # fmt: skip
    body = first_sms_body(context, event, now)
    verdict = decide(context.facts, paused=settings.PAUSE_OUTBOUND_SMS, now=now)
    if not isinstance(verdict, Probe):
        return await _apply(connection, event, existing, thread_id, body, verdict, now)
    # The sending circuit is open: one sender at a time tries Twilio. The probe's turn and the text
    # it sends commit together (a text changed meanwhile gives the turn back).
    async with connection.transaction():
        verdict = await claim_probe(connection, now)
        return await _apply(connection, event, existing, thread_id, body, verdict, now)


async def _apply(
    connection: asyncpg.Connection,
    event: CallMissed,
    existing: EarlierAttempt | None,
    thread_id: UUID,
    body: str,
    verdict: Send | Suppress | Wait,
    now: datetime,
) -> Outgoing | None:
    if isinstance(verdict, Send):
        message = await _record(
            connection, event, existing, thread_id, body, MessageStatus.SENDING, send_started_at=now
        )
        return Outgoing(
            message["id"], event.caller, event.tenant_number, body, now, unknown_outcome=False, probe=verdict.probe
        )
    if isinstance(verdict, Suppress):
        await _record(connection, event, existing, thread_id, body, MessageStatus.SUPPRESSED, reason=verdict.reason)
        log.info("first_sms.suppressed", reason=verdict.reason, caller=event.caller)
        return None
    await _record(
        connection,
        event,
        existing,
        thread_id,
        body,
        verdict.status,
        scheduled_for=verdict.scheduled_for,
        held_on_purpose=verdict.reason in DELIBERATE_WAITS,
    )
    raise Deferred(verdict.until, verdict.reason)


async def send_first_sms(event: CallMissed) -> None:
    """The `call.missed` subscriber: at most one first SMS per missed call, whatever is retried."""
    settings = get_settings()
    if settings.LOOKUP_LINE_TYPE_BEFORE_FIRST_SMS:
        await ensure_line_type(event.caller)  # cached: the decision below reads the answer
    outgoing = await plan_first_sms(event, settings)
    if outgoing is None:
        return

    async def accepted(connection: asyncpg.Connection, answer: Accepted) -> None:
        await _record_accepted(connection, event, outgoing, answer)

    async def rejected(connection: asyncpg.Connection, exc: SmsRejected) -> None:
        await record_rejection(connection, event.tenant_id, outgoing, exc)

    async def waiting(connection: asyncpg.Connection, status: MessageStatus) -> None:
        await record_waiting(connection, outgoing, status)

    await send_and_record(outgoing, what="first SMS", accepted=accepted, rejected=rejected, waiting=waiting)


async def _record_accepted(
    connection: asyncpg.Connection, event: CallMissed, outgoing: Outgoing, accepted: Accepted
) -> None:
    latency_ms = (datetime.now(UTC) - event.webhook_received_at).total_seconds() * 1000
    sent = FirstSmsSent(
        tenant_id=event.tenant_id,
        call_id=event.call_id,
        message_id=outgoing.message_id,
        latency_ms=latency_ms,
        correlation_id=event.correlation_id,
        causation_id=str(event.event_id),
    )
    early_error_code = await connection.fetchval(
        _ACCEPTED,
        outgoing.message_id,
        accepted.status,
        accepted.sid,
        latency_ms,
        sent.event_id,
        sent.tenant_id,
        sent.occurred_at,
        count_segments(outgoing.body),
        outgoing.body,
        *published_values(sent),
    )
    # `call.missed` is done: its outbox row was settled by the statement that wrote this one's.
    published_in_statement()
    await after_early_status(connection, early_error_code, outgoing.to)
    log.info("first_sms.sent", latency_ms=round(latency_ms, 1), sid=accepted.sid)

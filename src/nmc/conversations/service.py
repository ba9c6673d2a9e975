"""The first SMS after a missed call: guards, templates, exactly-once sending, delivery status.

Exactly once lives in Postgres: the message row's `idempotency_key` (`first_sms:<call id>`) is
unique, and the row is committed as `sending` before the Messages API request. A later attempt that
finds `sending` does not know whether Twilio created the text, so it looks in Twilio's Messages list
first and only sends if the text is not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import case, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.conversations.hours import quiet_until, within_business_hours
from nmc.conversations.models import (
    DEFAULT_QUIET_END,
    DEFAULT_QUIET_START,
    Message,
    MessagingSettings,
    OptOut,
    Thread,
)
from nmc.conversations.templates import (
    DEFAULT_AFTER_HOURS,
    DEFAULT_BOOKING_PROMPT,
    DEFAULT_BUSINESS_HOURS,
    MergeValues,
    UnknownMergeField,
    check_template,
    render,
)
from nmc.db import session_scope
from nmc.events.catalog import CallMissed, FirstSmsSent
from nmc.events.dispatcher import Deferred, PermanentFailure
from nmc.events.outbox import publish
from nmc.observability.logging import mask_phone
from nmc.settings import Settings, get_settings
from nmc.telephony.sms import UNSUBSCRIBED, Accepted, SmsRejected, get_sender

log = structlog.get_logger(module="conversations")

PAUSE_RECHECK = timedelta(seconds=15)
PAUSED_REASON = "PAUSE_OUTBOUND_SMS"
DONE_STATUSES = frozenset({"accepted", "queued", "sent", "delivered", "undelivered", "failed", "read", "suppressed"})
# Delivery statuses in the order they can follow each other; a late callback never moves back.
STATUS_RANK = {
    "sending": 0, "accepted": 1, "queued": 2, "scheduled": 2, "sent": 3,
    "delivered": 4, "undelivered": 4, "failed": 4, "read": 5,
}  # fmt: skip


@dataclass(frozen=True)
class FirstSmsContext:
    """What the guards and the template need, read in one query."""

    business_name: str
    timezone: str
    business_hours: dict[str, Any]
    tenant_status: str
    opted_out: bool
    texted_recently: bool
    settings: MessagingSettings | None


@dataclass(frozen=True)
class Outgoing:
    message_id: UUID
    to: str
    from_: str
    body: str
    send_started_at: datetime
    unknown_outcome: bool


_CONTEXT = text(
    """
    SELECT t.name, t.timezone, t.business_hours, t.status,
           EXISTS (SELECT 1 FROM conv_opt_outs o WHERE o.tenant_id = t.id AND o.phone = :caller) AS opted_out,
           EXISTS (
               SELECT 1 FROM conv_messages m
               WHERE m.tenant_id = t.id AND m.to_number = :caller AND m.kind = 'first_sms'
                 AND m.status <> 'suppressed' AND m.call_id <> :call_id
                 AND m.created_at > now() - make_interval(mins => coalesce(s.cooldown_minutes, 60))
           ) AS texted_recently
    FROM tenants t LEFT JOIN conv_settings s ON s.tenant_id = t.id
    WHERE t.id = :tenant_id
    """
)


async def load_context(session: AsyncSession, event: CallMissed) -> FirstSmsContext:
    row = (
        await session.execute(
            _CONTEXT, {"tenant_id": event.tenant_id, "caller": event.caller, "call_id": event.call_id}
        )
    ).one()
    settings = await session.get(MessagingSettings, event.tenant_id)
    return FirstSmsContext(
        business_name=row.name,
        timezone=row.timezone,
        business_hours=row.business_hours,
        tenant_status=row.status,
        opted_out=row.opted_out,
        texted_recently=row.texted_recently,
        settings=settings,
    )


def first_sms_body(context: FirstSmsContext, event: CallMissed, now: datetime) -> str:
    """Business-hours or after-hours template; a template we cannot fill falls back to the default."""
    custom = context.settings
    try:
        in_hours = within_business_hours(context.business_hours, context.timezone, now)
    except (ValueError, KeyError, TypeError) as exc:  # a broken setting never blocks the text
        log.warning("first_sms.business_hours_broken", error=str(exc))
        in_hours = True
    default = DEFAULT_BUSINESS_HOURS if in_hours else DEFAULT_AFTER_HOURS
    chosen = (custom.first_sms_business_hours if in_hours else custom.first_sms_after_hours) if custom else None
    values = MergeValues(
        business_name=context.business_name,
        caller_number=event.caller,
        booking_prompt=(custom.booking_prompt if custom and custom.booking_prompt else DEFAULT_BOOKING_PROMPT),
    )
    try:
        return render(check_template(chosen or default), values)
    except UnknownMergeField as exc:
        log.warning("first_sms.template_broken", tenant_id=str(event.tenant_id), error=str(exc))
        return render(default, values)


def quiet_hours_end(context: FirstSmsContext, now: datetime) -> datetime | None:
    """A broken quiet-hours setting fails open: a paying tenant is never silently muted."""
    custom = context.settings
    start = custom.quiet_hours_start if custom else DEFAULT_QUIET_START
    end = custom.quiet_hours_end if custom else DEFAULT_QUIET_END
    try:
        return quiet_until(start, end, context.timezone, now)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("first_sms.quiet_hours_broken", error=str(exc))
        return None


async def open_thread(session: AsyncSession, tenant_id: UUID, caller: str, tenant_number: str) -> UUID:
    """The open thread for (tenant, caller), created if there is none (unique partial index)."""
    await session.execute(
        insert(Thread)
        .values(tenant_id=tenant_id, caller=caller, tenant_number=tenant_number, status="open")
        .on_conflict_do_nothing(index_elements=[Thread.tenant_id, Thread.caller], index_where=text("status = 'open'"))
    )
    thread_id = await session.scalar(
        select(Thread.id).where(Thread.tenant_id == tenant_id, Thread.caller == caller, Thread.status == "open")
    )
    assert thread_id is not None
    return thread_id


async def _upsert_first_sms(
    session: AsyncSession, event: CallMissed, thread_id: UUID, body: str, status: str, **extra: Any
) -> Message:
    statement = insert(Message).values(
        tenant_id=event.tenant_id,
        thread_id=thread_id,
        call_id=event.call_id,
        idempotency_key=first_sms_key(event.call_id),
        direction="outbound",
        kind="first_sms",
        to_number=event.caller,
        from_number=event.tenant_number,
        body=body,
        status=status,
        **extra,
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[Message.idempotency_key],
        set_={
            "status": statement.excluded.status,
            "body": statement.excluded.body,
            **{k: getattr(statement.excluded, k) for k in extra},
        },
    ).returning(Message)
    return (await session.execute(upsert, execution_options={"populate_existing": True})).scalar_one()


def first_sms_key(call_id: UUID) -> str:
    return f"first_sms:{call_id}"


async def plan_first_sms(event: CallMissed, settings: Settings) -> Outgoing | None:
    """Decide in one short transaction; return what to send, or None when nothing is to be sent."""
    now = datetime.now(UTC)
    async with session_scope() as session:
        existing = await session.scalar(
            select(Message).where(Message.idempotency_key == first_sms_key(event.call_id)).with_for_update()
        )
        if existing is not None and existing.status in DONE_STATUSES:
            return None
        if existing is not None and existing.status == "sending":
            return _outgoing(existing, unknown_outcome=True)
        context = await load_context(session, event)
        thread_id = (
            existing.thread_id
            if existing
            else await open_thread(session, event.tenant_id, event.caller, event.tenant_number)
        )
        body = first_sms_body(context, event, now)
        reason = _suppression(context)
        if reason:
            await _upsert_first_sms(session, event, thread_id, body, "suppressed", suppressed_reason=reason)
            log.info("first_sms.suppressed", reason=reason, caller=mask_phone(event.caller))
            return None
        if settings.PAUSE_OUTBOUND_SMS:
            await _upsert_first_sms(session, event, thread_id, body, "paused")
            raise_after_commit = Deferred(now + PAUSE_RECHECK, PAUSED_REASON)
        elif until := quiet_hours_end(context, now):
            policy = context.settings.quiet_hours_policy if context.settings else "delay"
            if policy == "suppress":
                await _upsert_first_sms(session, event, thread_id, body, "suppressed", suppressed_reason="quiet_hours")
                return None
            await _upsert_first_sms(session, event, thread_id, body, "scheduled", scheduled_for=until)
            raise_after_commit = Deferred(until, "quiet hours")
        else:
            message = await _upsert_first_sms(session, event, thread_id, body, "sending", send_started_at=now)
            return _outgoing(message, unknown_outcome=False)
    raise raise_after_commit


def _suppression(context: FirstSmsContext) -> str | None:
    if context.tenant_status != "active":
        return "tenant_inactive"
    if context.opted_out:
        return "opted_out"
    if context.texted_recently:
        return "cooldown"
    return None


def _outgoing(message: Message, *, unknown_outcome: bool) -> Outgoing:
    assert message.send_started_at is not None
    return Outgoing(
        message_id=message.id,
        to=message.to_number,
        from_=message.from_number,
        body=message.body,
        send_started_at=message.send_started_at,
        unknown_outcome=unknown_outcome,
    )


async def send_first_sms(event: CallMissed) -> None:
    """The `call.missed` subscriber: at most one first SMS per missed call, whatever is retried."""
    settings = get_settings()
    outgoing = await plan_first_sms(event, settings)
    if outgoing is None:
        return
    sender = get_sender()
    accepted: Accepted | None = None
    if outgoing.unknown_outcome:
        accepted = await sender.find_sent(outgoing.to, outgoing.from_, outgoing.body, outgoing.send_started_at)
        if accepted:
            log.info("first_sms.found_after_unknown_outcome", sid=accepted.sid)
    if accepted is None:
        try:
            accepted = await sender.send(outgoing.to, outgoing.from_, outgoing.body)
        except SmsRejected as exc:
            await _record_rejection(event, outgoing, exc)
            if exc.code == UNSUBSCRIBED:
                return
            raise PermanentFailure(f"Twilio rejected the first SMS ({exc.http_status}, code {exc.code})") from exc
    await _record_accepted(event, outgoing, accepted)


async def _record_accepted(event: CallMissed, outgoing: Outgoing, accepted: Accepted) -> None:
    latency_ms = (datetime.now(UTC) - event.webhook_received_at).total_seconds() * 1000
    async with session_scope() as session:
        await session.execute(
            update(Message)
            .where(Message.id == outgoing.message_id)
            .values(status=accepted.status, twilio_sid=accepted.sid, sent_at=func.now(), latency_ms=latency_ms)
        )
        await session.execute(
            update(Thread)
            .where(Thread.tenant_id == event.tenant_id, Thread.caller == event.caller, Thread.status == "open")
            .values(last_activity_at=func.now())
        )
        await publish(
            session,
            FirstSmsSent(
                tenant_id=event.tenant_id,
                call_id=event.call_id,
                message_id=outgoing.message_id,
                latency_ms=latency_ms,
                correlation_id=event.correlation_id,
                causation_id=str(event.event_id),
            ),
        )
    log.info("first_sms.sent", latency_ms=round(latency_ms, 1), sid=accepted.sid)


async def _record_rejection(event: CallMissed, outgoing: Outgoing, exc: SmsRejected) -> None:
    async with session_scope() as session:
        await session.execute(
            update(Message).where(Message.id == outgoing.message_id).values(status="failed", error_code=exc.code)
        )
        if exc.code == UNSUBSCRIBED:
            await record_opt_out(session, event.tenant_id, outgoing.to, source="twilio_21610")
    log.warning("first_sms.rejected", code=exc.code, http_status=exc.http_status)


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

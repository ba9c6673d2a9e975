"""Missed-call rules and the voice webhooks' effects.

A call's row moves ringing → missed | answered; only the move to `missed` publishes `call.missed`,
and the database decides that move (an upsert with a guard), so retries, the parent-call fallback
and replays can never publish twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.events.catalog import CallMissed
from nmc.events.outbox import publish
from nmc.identity.service import NumberOwner
from nmc.observability.correlation import current_correlation_id
from nmc.settings import Settings
from nmc.telephony.models import Call

log = structlog.get_logger(module="telephony")

MISSED_STATUSES = frozenset({"no-answer", "busy", "failed", "canceled"})
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def is_missed(status: str, duration_seconds: int | None, settings: Settings) -> bool:
    """no-answer/busy/failed/canceled; a short `completed` (carrier voicemail) only when enabled."""
    if status in MISSED_STATUSES:
        return True
    return (
        status == "completed"
        and settings.TREAT_SHORT_COMPLETED_AS_MISSED
        and duration_seconds is not None
        and duration_seconds <= settings.SHORT_COMPLETED_MAX_SECONDS
    )


async def record_ringing(session: AsyncSession, owner: NumberOwner, call_sid: str, caller: str, to: str) -> None:
    await session.execute(
        insert(Call)
        .values(tenant_id=owner.tenant_id, call_sid=call_sid, caller=caller, tenant_number=to, status="ringing")
        .on_conflict_do_nothing(index_elements=[Call.call_sid])
    )


@dataclass(frozen=True)
class CallOutcome:
    call_sid: str
    caller: str
    tenant_number: str
    status: str  # the dial or call status Twilio reported
    duration_seconds: int | None
    from_dial: bool  # the <Dial> action (authoritative) or the parent call's status callback


async def apply_outcome(
    session: AsyncSession,
    owner: NumberOwner,
    outcome: CallOutcome,
    received_at: datetime,
    settings: Settings,
) -> bool:
    """Record what became of the call; publish `call.missed` when it just became missed."""
    missed = is_missed(outcome.status, outcome.duration_seconds, settings)
    statement = insert(Call).values(
        tenant_id=owner.tenant_id,
        call_sid=outcome.call_sid,
        caller=outcome.caller,
        tenant_number=outcome.tenant_number,
        status="missed" if missed else "answered",
        dial_status=outcome.status if outcome.from_dial else None,
        duration_seconds=outcome.duration_seconds,
        missed_at=func.now() if missed else None,
    )
    # The dial outcome is authoritative; the parent's status only counts while no dial outcome is known.
    guard = Call.status != "missed" if missed else Call.status == "ringing"
    if not outcome.from_dial:
        guard = guard & Call.dial_status.is_(None)
    upsert = statement.on_conflict_do_update(
        index_elements=[Call.call_sid],
        set_={
            "status": statement.excluded.status,
            "dial_status": func.coalesce(statement.excluded.dial_status, Call.dial_status),
            "duration_seconds": statement.excluded.duration_seconds,
            "missed_at": statement.excluded.missed_at,
        },
        where=guard,
    ).returning(Call.id, Call.status)
    changed = (await session.execute(upsert)).first()
    if changed is None or changed.status != "missed":
        return False
    if not _E164.match(outcome.caller):
        log.info("call.missed_not_textable", call_sid=outcome.call_sid, reason="caller id withheld")
        return False
    await publish(
        session,
        CallMissed(
            tenant_id=owner.tenant_id,
            call_id=changed.id,
            call_sid=outcome.call_sid,
            caller=outcome.caller,
            tenant_number=outcome.tenant_number,
            dial_status=outcome.status,
            webhook_received_at=received_at,
            correlation_id=current_correlation_id(),
        ),
    )
    log.info("call.missed", call_sid=outcome.call_sid, dial_status=outcome.status, event_name=CallMissed.name)
    return True

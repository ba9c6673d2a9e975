"""Missed-call rules and the voice webhooks' effects.

A call's row moves ringing → missed | answered; only the move to `missed` publishes `call.missed`,
and the database decides that move (an upsert with a guard), so retries, the parent-call fallback
and replays can never publish twice.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import structlog

from nmc.db import CteStatement, Transactional, raw_connection
from nmc.events import E164_PATTERN, CallMissed, publish, publish_in
from nmc.identity import NumberOwner
from nmc.observability.correlation import current_correlation_id
from nmc.settings import Settings
from nmc.webhooks import Applied

log = structlog.get_logger(module="telephony")

# Our own status for a call we did not forward: its forwarding number is not verified yet (issue #15).
NOT_FORWARDED = "not-forwarded"
MISSED_STATUSES = frozenset({"no-answer", "busy", "failed", "canceled", NOT_FORWARDED})
_E164 = re.compile(E164_PATTERN)
# Caller IDs that are nobody to text: withheld ones as carriers spell them (any case), and the
# placeholder numbers Twilio puts in `From` for them (they look like E.164: +266696687 "ANONYMOUS",
# +8656696 "UNKNOWN", +7378742833 "RESTRICTED", +86282452253 "UNAVAILABLE", +2562533 "BLOCKED").
WITHHELD_CALLER_IDS = frozenset(
    {
        "anonymous",
        "restricted",
        "unavailable",
        "unknown",
        "private",
        "+266696687",
        "+8656696",
        "+7378742833",
        "+86282452253",
        "+2562533",
    }
)


def is_textable(caller: str) -> bool:
    """A number we can text back: E.164 and not a withheld caller ID or one of its placeholders."""
    return caller.strip().lower() not in WITHHELD_CALLER_IDS and _E164.match(caller) is not None


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


_INSERT_RINGING = """
    INSERT INTO conv_calls (id, tenant_id, call_sid, caller, tenant_number, status)
    VALUES ($1, $2, $3, $4, $5, 'ringing')
    ON CONFLICT (call_sid) DO NOTHING
"""


async def record_ringing(session: Transactional, owner: NumberOwner, call_sid: str, caller: str, to: str) -> None:
    await (await raw_connection(session)).execute(_INSERT_RINGING, uuid4(), owner.tenant_id, call_sid, caller, to)


@dataclass(frozen=True)
class CallOutcome:
    call_sid: str
    caller: str
    tenant_number: str
    status: str  # the dial or call status Twilio reported
    duration_seconds: int | None
    from_dial: bool  # the <Dial> action (authoritative) or the parent call's status callback


# A call's outcome row: `$6` is our status (missed or answered), `$7` the dial status (None from the
# parent call's status callback).
_OUTCOME_ROW = "$1, $2, $3, $4, $5, $6::varchar, $7, $8, CASE WHEN $6::varchar = 'missed' THEN now() END"


@functools.cache
def _outcome_upsert(guard: str, when: str = "") -> str:
    """Insert the call, or move an existing one only when `guard` allows; RETURNING only on a change.
    With `when` (a condition over a statement's earlier parts), only when it holds."""
    row = f"SELECT {_OUTCOME_ROW} WHERE {when}" if when else f"VALUES ({_OUTCOME_ROW})"
    return f"""
        INSERT INTO conv_calls AS c (id, tenant_id, call_sid, caller, tenant_number, status, dial_status,
                                     duration_seconds, missed_at)
        {row}
        ON CONFLICT (call_sid) DO UPDATE SET
            status = EXCLUDED.status,
            dial_status = coalesce(EXCLUDED.dial_status, c.dial_status),
            duration_seconds = EXCLUDED.duration_seconds,
            missed_at = EXCLUDED.missed_at
        WHERE {guard}
        RETURNING id, status
    """


# A call becomes missed once; it becomes answered only from ringing. The dial outcome is
# authoritative; the parent call's status counts only while no dial outcome is known.
_GUARDS = {
    (True, True): "c.status <> 'missed'",
    (False, True): "c.status = 'ringing'",
    (True, False): "c.status <> 'missed' AND c.dial_status IS NULL",
    (False, False): "c.status = 'ringing' AND c.dial_status IS NULL",
}


async def apply_outcome(
    session: Transactional,
    owner: NumberOwner,
    outcome: CallOutcome,
    received_at: datetime,
    settings: Settings,
) -> bool:
    """Record what became of the call; publish `call.missed` when it just became missed.

    On the first-SMS path: plain SQL on the session's connection (see `nmc.db.raw_connection`).
    """
    missed = is_missed(outcome.status, outcome.duration_seconds, settings)
    values = _outcome_values(owner, outcome, missed)
    upsert = _outcome_upsert(_GUARDS[(missed, outcome.from_dial)])
    changed = await (await raw_connection(session)).fetchrow(upsert, *values)
    if changed is None or changed["status"] != "missed":
        return False
    if not _textable(outcome):
        return False
    await publish(session, _call_missed(owner, outcome, changed["id"], received_at))
    _log_missed(outcome)
    return True


def outcome_in(
    statement: CteStatement,
    when: str,
    owner: NumberOwner,
    outcome: CallOutcome,
    received_at: datetime,
    settings: Settings,
) -> Applied:
    """`apply_outcome` as parts of `statement` acting only when `when` holds (a webhook's first
    delivery): the call's upsert, and `call.missed` published with the upserted call's id when the
    call just became missed. Returns what to log from the statement's row."""
    missed = is_missed(outcome.status, outcome.duration_seconds, settings)
    values = _outcome_values(owner, outcome, missed)
    statement.with_cte("call_outcome", _outcome_upsert(_GUARDS[(missed, outcome.from_dial)], when), values)
    statement.returning("(SELECT status FROM call_outcome) AS call_status")
    if missed and is_textable(outcome.caller):
        # The new row's id stands in for the call's until the statement puts the upserted row's in.
        event = _call_missed(owner, outcome, values[0], received_at)
        publish_in(statement, event, source="call_outcome", when="status = 'missed'", fields={"call_id": "id"})

    def applied(row: Mapping[str, Any]) -> None:
        if row["call_status"] == "missed" and _textable(outcome):
            _log_missed(outcome)

    return applied


def _outcome_values(owner: NumberOwner, outcome: CallOutcome, missed: bool) -> tuple[Any, ...]:
    return (
        uuid4(),
        owner.tenant_id,
        outcome.call_sid,
        outcome.caller,
        outcome.tenant_number,
        "missed" if missed else "answered",
        outcome.status if outcome.from_dial else None,
        outcome.duration_seconds,
    )


def _call_missed(owner: NumberOwner, outcome: CallOutcome, call_id: UUID, received_at: datetime) -> CallMissed:
    return CallMissed(
        tenant_id=owner.tenant_id,
        call_id=call_id,
        call_sid=outcome.call_sid,
        caller=outcome.caller,
        tenant_number=outcome.tenant_number,
        dial_status=outcome.status,
        webhook_received_at=received_at,
        correlation_id=current_correlation_id(),
    )


def _textable(outcome: CallOutcome) -> bool:
    """Whether a call that just became missed is texted back (logged when not: nobody to text)."""
    if is_textable(outcome.caller):
        return True
    log.info("call.missed_not_textable", call_sid=outcome.call_sid, reason="caller id withheld")
    return False


def _log_missed(outcome: CallOutcome) -> None:
    log.info("call.missed", call_sid=outcome.call_sid, dial_status=outcome.status, event_name=CallMissed.name)

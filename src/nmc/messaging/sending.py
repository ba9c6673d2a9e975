"""The send-and-record step every text shares, once the decision says "send".

Exactly once lives in Postgres: the caller committed the message as `sending` before this step
runs. A later attempt that finds it `sending` does not know whether Twilio created the text, so it
looks in Twilio's Messages list first and only sends if the text is not there.

Outcomes, by whose fault a refusal is (`sms.refusal` classifies Twilio's answer):
- accepted → the caller's `accepted` record, in one transaction;
- the recipient's (`RECIPIENT_REFUSALS`: 21610 opted out, 21211 invalid, 21614 not a mobile, 30006
  landline, ...) → the caller's `rejected` record (the message `failed` with its code, 21610 opts the
  recipient out), 30006/21635 mark the number a landline in the same transaction; final, the event
  is settled;
- ours (401, 403, 20003, 20005, ...) → the text waits as `paused`, the sending circuit opens for
  everyone (`circuit.py`) and the event is deferred until the next probe (`Deferred` spends no attempt);
- a rate limit (429) → Twilio did not create the text: it waits as `pending` and the event is deferred
  for `Retry-After` (bounded);
- any other 4xx → `rejected` (the message `failed` with its code) and the event is parked
  (`PermanentFailure`) for a human; `just replay-outbox` makes such a text sendable again;
- 5xx and timeouts (`SmsOutcomeUnknown`): the text stays `sending` (it may exist at Twilio); one
  such failure is retried with the dispatcher's backoff, a run of them is an outage: the circuit opens
  (cause `unavailable`) and the text waits for the probe without spending an attempt.

A text whose outcome is unknown waits behind an open circuit too (`retry_gate`), and is looked up
before it is sent again. A probe (`Outgoing.probe`), or a retried text, that Twilio answers with
anything but a refusal of our account closes the circuit in the same transaction as its record, and
releases every text the circuit held.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from nmc.db import hot_connection, hot_transaction
from nmc.events import Deferred, PermanentFailure, release_deferred
from nmc.messaging.circuit import close_circuit, note_unavailable, open_circuit, retry_gate
from nmc.messaging.decision import CIRCUIT_REASON, Wait
from nmc.messaging.lines import mark_line_type
from nmc.messaging.sms import (
    Accepted,
    SmsAccountRefused,
    SmsOutcomeUnknown,
    SmsRateLimited,
    SmsRecipientRefused,
    SmsRejected,
    get_sender,
)
from nmc.messaging.vocabulary import LANDLINE_CODES, LineType, MessageStatus

log = structlog.get_logger(module="messaging")

RATE_LIMITED_REASON = "Twilio rate limit (429)"
RATE_LIMIT_DEFAULT_WAIT = timedelta(seconds=5)  # a 429 without a usable Retry-After
RATE_LIMIT_MIN_WAIT = timedelta(seconds=1)
RATE_LIMIT_MAX_WAIT = timedelta(seconds=60)


@dataclass(frozen=True)
class Outgoing:
    """A text committed as `sending`: what goes to Twilio."""

    message_id: UUID
    to: str
    from_: str
    body: str
    send_started_at: datetime
    unknown_outcome: bool  # an earlier attempt was `sending` when it ended
    probe: bool = False  # the probe of an open sending circuit (`Send.probe`)


# Twilio took the text: record it on a connection outside any transaction, in one statement or a
# transaction of the callback's own (the first SMS records everything in one autocommitted statement:
# three round trips fewer per text than BEGIN … COMMIT around it).
OnAccepted = Callable[[asyncpg.Connection, Accepted], Awaitable[None]]
OnRejected = Callable[[asyncpg.Connection, SmsRejected], Awaitable[None]]
# The text was not created and goes back to waiting with this status (`pending` or `paused`).
OnWaiting = Callable[[asyncpg.Connection, MessageStatus], Awaitable[None]]


def rate_limit_wait(retry_after: float | None) -> timedelta:
    """How long a 429 defers the text: Twilio's `Retry-After`, else a few seconds, within bounds."""
    wait = RATE_LIMIT_DEFAULT_WAIT if retry_after is None else timedelta(seconds=retry_after)
    return min(max(wait, RATE_LIMIT_MIN_WAIT), RATE_LIMIT_MAX_WAIT)


async def transmit(outgoing: Outgoing) -> Accepted:
    """Send once: after an unknown outcome, look the text up in Twilio before sending it again."""
    sender = get_sender()
    if outgoing.unknown_outcome:
        try:
            found = await sender.find_sent(outgoing.to, outgoing.from_, outgoing.body, outgoing.send_started_at)
        except SmsRejected as exc:  # the lookup was refused: the earlier attempt may still have made it
            exc.text_may_exist = True
            raise
        if found:
            log.info("sms.found_after_unknown_outcome", sid=found.sid)
            return found
    return await sender.send(outgoing.to, outgoing.from_, outgoing.body)


async def send_and_record(
    outgoing: Outgoing, *, what: str, accepted: OnAccepted, rejected: OnRejected, waiting: OnWaiting
) -> Accepted | None:
    """Transmit, then record the outcome with the caller's statements. None when Twilio refused the
    text for good; raises `Deferred` when it must wait, `PermanentFailure` for a refusal we do not know."""
    if outgoing.unknown_outcome and not outgoing.probe:
        outgoing = await _behind_the_circuit(outgoing)
    # The answer of a probe or of a retried text says whether Twilio takes texts again.
    heals = outgoing.probe or outgoing.unknown_outcome
    started_at = datetime.now(UTC)
    try:
        answer = await transmit(outgoing)
    except SmsOutcomeUnknown as exc:
        async with hot_transaction() as connection:
            probe_at = await note_unavailable(connection, exc, started_at)
        if probe_at is None:
            raise  # one failure among successes: the dispatcher's backoff
        log.warning("sms.twilio_unavailable", error=str(exc), to=outgoing.to)
        raise Deferred(probe_at, CIRCUIT_REASON) from exc
    except SmsRateLimited as exc:
        until = datetime.now(UTC) + rate_limit_wait(exc.retry_after)
        if not exc.text_may_exist:
            async with hot_transaction() as connection:
                await waiting(connection, MessageStatus.PENDING)
        log.warning("sms.rate_limited", retry_after=exc.retry_after, to=outgoing.to)
        raise Deferred(until, RATE_LIMITED_REASON) from exc
    except SmsAccountRefused as exc:
        async with hot_transaction() as connection:
            if not exc.text_may_exist:
                await waiting(connection, MessageStatus.PAUSED)
            probe_at = await open_circuit(connection, exc)
        log.warning("sms.account_refused", code=exc.code, http_status=exc.http_status, to=outgoing.to)
        raise Deferred(probe_at, CIRCUIT_REASON) from exc
    except SmsRejected as exc:
        async with hot_transaction() as connection:
            await rejected(connection, exc)
            if exc.code in LANDLINE_CODES:
                await mark_line_type(connection, outgoing.to, LineType.LANDLINE, f"twilio_{exc.code}")
            closed = heals and await close_circuit(connection)
        if closed:
            await release_deferred(CIRCUIT_REASON)
        log.warning("sms.rejected", code=exc.code, http_status=exc.http_status, to=outgoing.to)
        if not isinstance(exc, SmsRecipientRefused):  # a refusal we do not know: a human looks at it
            raise PermanentFailure(f"Twilio rejected the {what} ({exc.http_status}, code {exc.code})") from exc
        return None
    async with hot_connection() as connection:
        await accepted(connection, answer)
    if heals:
        async with hot_transaction() as connection:
            closed = await close_circuit(connection)
        if closed:
            await release_deferred(CIRCUIT_REASON)
    return answer


async def _behind_the_circuit(outgoing: Outgoing) -> Outgoing:
    """A retried text waits for the probe like any other while the circuit is open (it stays `sending`)."""
    async with hot_transaction() as connection:
        gate = await retry_gate(connection, datetime.now(UTC))
    if isinstance(gate, Wait):
        raise Deferred(gate.until, gate.reason)
    return replace(outgoing, probe=gate.probe)

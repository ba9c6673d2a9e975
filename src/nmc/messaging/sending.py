"""The send-and-record step every text shares, once the decision says "send".

Exactly once lives in Postgres: the caller committed the message as `sending` before this step
runs. A later attempt that finds it `sending` does not know whether Twilio created the text, so it
looks in Twilio's Messages list first and only sends if the text is not there.

Outcomes: accepted → the caller's `accepted` record, in one transaction; a 4xx → the caller's
`rejected` record (the message failed), 30006 marks the number a landline in the same transaction,
and any code but 21610/30006 parks the event (`PermanentFailure`); 5xx and timeouts raise
`SmsOutcomeUnknown` for the dispatcher to retry with backoff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from nmc.db import hot_transaction
from nmc.events import PermanentFailure
from nmc.messaging.lines import mark_line_type
from nmc.messaging.sms import Accepted, SmsRejected, get_sender
from nmc.messaging.vocabulary import UNREACHABLE_LANDLINE, UNSUBSCRIBED, LineType

log = structlog.get_logger(module="messaging")


@dataclass(frozen=True)
class Outgoing:
    """A text committed as `sending`: what goes to Twilio."""

    message_id: UUID
    to: str
    from_: str
    body: str
    send_started_at: datetime
    unknown_outcome: bool  # an earlier attempt was `sending` when it ended


OnAccepted = Callable[[asyncpg.Connection, Accepted], Awaitable[None]]
OnRejected = Callable[[asyncpg.Connection, SmsRejected], Awaitable[None]]


async def transmit(outgoing: Outgoing) -> Accepted:
    """Send once: after an unknown outcome, look the text up in Twilio before sending it again."""
    sender = get_sender()
    if outgoing.unknown_outcome:
        found = await sender.find_sent(outgoing.to, outgoing.from_, outgoing.body, outgoing.send_started_at)
        if found:
            log.info("sms.found_after_unknown_outcome", sid=found.sid)
            return found
    return await sender.send(outgoing.to, outgoing.from_, outgoing.body)


async def send_and_record(
    outgoing: Outgoing, *, what: str, accepted: OnAccepted, rejected: OnRejected
) -> Accepted | None:
    """Transmit, then record the outcome with the caller's statements. None when Twilio refused."""
    try:
        answer = await transmit(outgoing)
    except SmsRejected as exc:
        async with hot_transaction() as connection:
            await rejected(connection, exc)
            if exc.code == UNREACHABLE_LANDLINE:
                await mark_line_type(connection, outgoing.to, LineType.LANDLINE, "twilio_30006")
        log.warning("sms.rejected", code=exc.code, http_status=exc.http_status, to=outgoing.to)
        if exc.code not in (UNSUBSCRIBED, UNREACHABLE_LANDLINE):  # the others: retrying cannot help
            raise PermanentFailure(f"Twilio rejected the {what} ({exc.http_status}, code {exc.code})") from exc
        return None
    async with hot_transaction() as connection:
        await accepted(connection, answer)
    return answer

"""Parking a poison event by hand (runbook §7.2 step 4): `just park EVENT_ID --reason "..."`.

The row moves intact from `outbox_events` to `outbox_events_errors` (the same move the dispatcher
makes after the attempt limit), with `last_error` = 'parked by operator: <reason>'. "Do not bypass
schema rules": a row whose payload does not conform to its Event Catalog entry is refused — fix the
payload first — so every parked row can be replayed (`just replay-outbox`). A row held by a running
dispatch waits for it (row lock); a dispatched row is not parked.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import msgspec
import structlog
from sqlalchemy import text, update

from nmc.db import session_scope
from nmc.events.catalog import UnknownEvent, load_event
from nmc.events.dispatcher import move_rows
from nmc.events.models import OutboxEventError

log = structlog.get_logger(module="events")

OPERATOR_NOTE = "parked by operator: {reason}"


class ParkRefused(Exception):
    """The event cannot be parked (missing, dispatched, or not conforming to the catalog)."""


@dataclass(frozen=True)
class Parked:
    event_id: UUID
    event_name: str
    attempts: int
    previous_error: str | None
    note: str

    def line(self) -> str:
        return (
            f"parked {self.event_id} ({self.event_name}, {self.attempts} attempts; last error: "
            f"{self.previous_error or '-'}) into outbox_events_errors: {self.note}"
        )


_ROW = text(
    """
    SELECT event_name, event_version, payload, attempts, last_error, dispatched_at
    FROM outbox_events WHERE id = :id FOR UPDATE
    """
)


async def park(event_id: UUID, reason: str) -> Parked:
    reason = " ".join(reason.split())
    if not reason:
        raise ParkRefused("say why: --reason is required (it goes into last_error and the bug)")
    async with session_scope() as session:
        row = (await session.execute(_ROW, {"id": event_id})).first()
        if row is None:
            parked = await session.scalar(text("SELECT 1 FROM outbox_events_errors WHERE id = :id"), {"id": event_id})
            raise ParkRefused(f"{event_id}: " + ("already parked" if parked else "no such outbox event"))
        if row.dispatched_at is not None:
            raise ParkRefused(f"{event_id}: dispatched at {row.dispatched_at.isoformat()}, nothing to park")
        try:
            load_event(row.event_name, row.event_version, row.payload)
        except (UnknownEvent, msgspec.ValidationError) as exc:
            raise ParkRefused(
                f"{event_id}: its payload does not conform to the Event Catalog ({exc}); "
                "fix the row first, DLQ entries must conform too (runbook §7.2)"
            ) from None
        note = OPERATOR_NOTE.format(reason=reason)[:2000]
        await move_rows(session, "outbox_events", "outbox_events_errors", [event_id])
        await session.execute(update(OutboxEventError).where(OutboxEventError.id == event_id).values(last_error=note))
    log.warning("outbox.parked_by_operator", event_id=str(event_id), event_name=row.event_name, reason=reason)
    return Parked(event_id, row.event_name, row.attempts, row.last_error, note)

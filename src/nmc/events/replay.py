"""`just replay-outbox`: parked events back into the outbox, re-validated, re-enqueued.

Subscribers are idempotent (unique keys), so a replay never repeats an effect that already happened,
and an effect recorded as finished is not retried by requeueing its event alone. A composition root
that knows what must be reopened for the event to do its work again (the CLI: texts that failed
before Twilio had them) passes `before_requeue`, which runs in the same transaction as the requeue,
so nothing is reopened without its event and no requeued event is dispatched before its reopening.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import msgspec
from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import raw_connection, session_scope
from nmc.events.catalog import DomainEvent, UnknownEvent, load_event
from nmc.events.dispatcher import move_rows
from nmc.events.models import OutboxEvent, OutboxEventError
from nmc.events.outbox import enqueue_dispatch


@dataclass(frozen=True)
class ReplayFilter:
    event_ids: list[UUID] = field(default_factory=list)
    event_name: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def query(self) -> Select[OutboxEventError]:
        query = select(OutboxEventError).order_by(OutboxEventError.created_at)
        if self.event_ids:
            query = query.where(OutboxEventError.id.in_(self.event_ids))
        if self.event_name:
            query = query.where(OutboxEventError.event_name == self.event_name)
        if self.since:
            query = query.where(OutboxEventError.created_at >= self.since)
        if self.until:
            query = query.where(OutboxEventError.created_at < self.until)
        return query


# Runs in the replay's transaction with the events about to be requeued (also on a dry run: it must
# then change nothing).
BeforeRequeue = Callable[[AsyncSession, list[DomainEvent]], Awaitable[None]]


@dataclass
class ReplayReport:
    dry_run: bool
    replayed: list[OutboxEventError] = field(default_factory=list)
    invalid: list[tuple[OutboxEventError, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would requeue" if self.dry_run else "requeued"
        out = [
            f"{verb} {row.id} {row.event_name}@v{row.event_version} (last error: {row.last_error})"
            for row in self.replayed
        ]
        out += [f"kept {row.id} {row.event_name}@v{row.event_version}: {reason}" for row, reason in self.invalid]
        out.append(f"{verb} {len(self.replayed)}, kept {len(self.invalid)} that no longer fit the catalog")
        return out


async def replay(
    selection: ReplayFilter, *, dry_run: bool = False, before_requeue: BeforeRequeue | None = None
) -> ReplayReport:
    report = ReplayReport(dry_run=dry_run)
    async with session_scope() as session:
        rows = list((await session.execute(selection.query().with_for_update(skip_locked=True))).scalars())
        events: list[DomainEvent] = []
        for row in rows:
            try:
                events.append(load_event(row.event_name, row.event_version, row.payload))
            except (UnknownEvent, msgspec.ValidationError) as exc:
                report.invalid.append((row, str(exc)))
            else:
                report.replayed.append(row)
        if before_requeue is not None and events:
            await before_requeue(session, events)
        if dry_run or not report.replayed:
            return report
        ids = [row.id for row in report.replayed]
        await move_rows(session, "outbox_events_errors", "outbox_events", ids)
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_(ids))
            .values(attempts=0, available_at=datetime.now().astimezone(), dispatched_at=None)
        )
        connection = await raw_connection(session)
        for event_id in ids:
            await enqueue_dispatch(connection, event_id)
    return report

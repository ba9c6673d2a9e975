"""Publish domain events into the outbox, in the caller's transaction."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.events.catalog import DomainEvent, validated
from nmc.events.models import OutboxEvent
from nmc.queue.pgq import OUTBOX_DISPATCH, enqueue_in_transaction


def dispatch_key(event_id: object) -> str:
    """PgQueuer dedupe key: at most one waiting dispatch job per outbox row."""
    return f"outbox:{event_id}"


async def publish(session: AsyncSession, event: DomainEvent) -> None:
    """Validate `event` against the catalog, write its outbox row and enqueue its dispatch job.

    Both writes ride the session's transaction: a rollback leaves neither, a commit wakes the
    worker through PgQueuer's NOTIFY trigger.
    """
    payload = validated(event)
    await session.execute(
        insert(OutboxEvent).values(
            id=event.event_id,
            event_name=event.name,
            event_version=event.version,
            tenant_id=event.tenant_id,
            payload=payload,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
        )
    )
    await enqueue_in_transaction(
        session, OUTBOX_DISPATCH, event.event_id.bytes, dedupe_key=dispatch_key(event.event_id)
    )

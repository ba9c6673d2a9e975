"""Publish domain events into the outbox, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from uuid import UUID

import asyncpg
import msgspec

from nmc.db import CteStatement, Transactional, numbered_from, raw_connection
from nmc.events.catalog import DomainEvent, validated
from nmc.events.settling import MARK_DISPATCHED, settling_now
from nmc.queue.pgq import OUTBOX_DISPATCH, enqueue, enqueue_in, enqueue_many


def dispatch_key(event_id: object) -> str:
    """PgQueuer dedupe key: at most one waiting dispatch job per outbox row."""
    return f"outbox:{event_id}"


async def enqueue_dispatch(
    connection: asyncpg.Connection, event_id: UUID, *, key_suffix: str = "", after: timedelta | None = None
) -> None:
    """The PgQueuer job that dispatches one outbox row (the suffix keeps a retry apart from the job
    still running when it is enqueued)."""
    await enqueue(
        connection, OUTBOX_DISPATCH, event_id.bytes, dedupe_key=dispatch_key(event_id) + key_suffix, execute_after=after
    )


async def enqueue_dispatches(
    connection: asyncpg.Connection, event_ids: list[UUID], key_suffixes: list[str] | None = None
) -> None:
    """`enqueue_dispatch` for many rows in one statement (`key_suffixes`: one per row)."""
    suffixes = key_suffixes or [""] * len(event_ids)
    keys = [dispatch_key(event_id) + suffix for event_id, suffix in zip(event_ids, suffixes, strict=True)]
    await enqueue_many(connection, OUTBOX_DISPATCH, [event_id.bytes for event_id in event_ids], keys)


# Plain SQL on the session's own connection: this runs inside the webhook that starts the
# first-SMS clock, where SQLAlchemy's statement building cost more than the database round trip.
_INSERT_OUTBOX = """
    INSERT INTO outbox_events (id, event_name, event_version, tenant_id, payload, correlation_id, causation_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


# The same row as a part of a caller's statement (`publish_in`): once per row of `{source}` meeting
# `{when}`, with `{fields}` of its payload taken from that row.
_INSERT_OUTBOX_FROM = """
    INSERT INTO outbox_events (id, event_name, event_version, tenant_id, payload, correlation_id, causation_id)
    SELECT $1, $2, $3, $4, $5::jsonb || jsonb_build_object({fields}), $6, $7 FROM {source} WHERE {when}
    RETURNING id
"""


async def publish(session: Transactional, event: DomainEvent) -> None:
    """Validate `event` against the catalog, write its outbox row and enqueue its dispatch job.

    Both writes ride the session's transaction: a rollback leaves neither, a commit wakes the
    worker through PgQueuer's NOTIFY trigger.
    """
    await publish_on(await raw_connection(session), event)


async def publish_on(connection: asyncpg.Connection, event: DomainEvent) -> None:
    """`publish` on a plain asyncpg connection already in a transaction (the worker's hot path).

    Every row is written undispatched: whether anyone subscribes is the dispatching worker's to know
    (in a rolling deploy an old web must not settle an event a new worker now handles). An event
    whose catalog entry does not `wake_worker` gets no job: the worker's sweep settles it in bulk.
    A last handler that publishes in its final statement settles its event there (`published_cte`).
    """
    if event.wake_worker:  # the row and its job in one round trip (a missed call's, on the webhook)
        statement = CteStatement()
        publish_in(statement, event)
        await statement.run(connection)
    else:
        await connection.execute(_INSERT_OUTBOX, *_outbox_row(event))


def publish_in(
    statement: CteStatement,
    event: DomainEvent,
    *,
    source: str = "",
    when: str = "true",
    fields: Mapping[str, str] | None = None,
) -> None:
    """`event` published as parts of the caller's `statement` (`nmc.db.CteStatement`): its outbox row
    as the CTE `published`, and, for an event that wakes the worker, its dispatch job, written only
    with the row. With `source` (an earlier part's CTE name) the row is written for each of its rows
    that meets `when`, and `fields` of the payload are that row's columns (`{"call_id": "id"}`): values
    the statement itself decides, such as the id of a row it upserted. The event must carry a valid
    value for each of them (the catalog validates it), which the statement then replaces.
    """
    row = _outbox_row(event)
    if source:
        pairs = ", ".join(f"'{name}', {column}" for name, column in (fields or {}).items())
        statement.with_cte("published", _INSERT_OUTBOX_FROM.format(source=source, when=when, fields=pairs), row)
    else:
        statement.with_cte("published", f"{_INSERT_OUTBOX} RETURNING id", row)
    if event.wake_worker:
        dedupe_key = dispatch_key(event.event_id)
        only_with_the_row = "EXISTS (SELECT FROM published)" if source else ""
        enqueue_in(statement, OUTBOX_DISPATCH, event.event_id.bytes, dedupe_key, when=only_with_the_row)
    statement.returning("EXISTS (SELECT FROM published) AS published")


def _outbox_row(event: DomainEvent) -> tuple[object, ...]:
    return (
        event.event_id,
        event.name,
        event.version,
        event.tenant_id,
        msgspec.json.encode(validated(event)).decode(),
        event.correlation_id,
        event.causation_id,
    )


def published_cte(name: str, first: int) -> str:
    """An event published as a CTE of the caller's own statement: the event's outbox row
    written, and the event being dispatched settled, in the statement the handler runs anyway — so a
    handler's final write can be one autocommitted statement instead of a transaction of four round
    trips. Its values (`published_values`) are bound from `$first` on; after the statement succeeded,
    call `published_in_statement`. For a statement whose parts share one parameter list (the first
    SMS's acceptance: its KPI, billing and latency parts read the same `$n`); a statement built from
    parts with parameters of their own uses `publish_in` on a `CteStatement`."""
    settle = MARK_DISPATCHED.replace("$1", f"${first + 7}")
    return f"{name}_settled AS ({settle}), {name} AS ({numbered_from(_INSERT_OUTBOX, first)})"


def published_values(event: DomainEvent) -> tuple[object, ...]:
    """The 8 values of `published_cte`: the validated row, and the event to settle (None outside a last
    handler: then nothing is settled). Only for events that need no dispatch job (`wake_worker` off):
    a job is a statement of PgQueuer's own."""
    if event.wake_worker:
        raise ValueError(f"{event.name} wakes the worker: publish it with publish_on")
    settling = settling_now()
    return (*_outbox_row(event), settling.event_id if settling else None)


def published_in_statement() -> None:
    """The statement carrying `published_cte` succeeded: the dispatched event is settled."""
    if (settling := settling_now()) is not None:
        settling.settled = True

"""Outbox publish and dispatch against the real database (no worker process: `dispatch` is called directly)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import pytest

from nmc.db import hot_pool, hot_transaction, session_scope
from nmc.events.catalog import DomainEvent, FirstSmsSent, MessageStatusChanged, TenantCreated
from nmc.events.dispatcher import PermanentFailure, backoff, dispatch, sweep
from nmc.events.outbox import publish, published_cte, published_in_statement, published_values
from nmc.events.settling import settle_on
from nmc.events.subscribers import handlers_for, subscriber
from nmc.observability.correlation import current_correlation_id


class Boom(Exception):
    pass


def status_changed(**overrides: Any) -> MessageStatusChanged:
    values: dict[str, Any] = {
        "tenant_id": uuid4(),
        "message_id": uuid4(),
        "status": "delivered",
        "correlation_id": f"corr-{uuid4().hex[:8]}",
        "causation_id": "cause-1",
    }
    values.update(overrides)
    return MessageStatusChanged(**values)


@pytest.fixture
def subscribed(handlers: None) -> None:
    """message.status_changed gets a (no-op) subscriber, so publishing it needs a dispatch."""

    @subscriber(MessageStatusChanged)
    async def noted(event: MessageStatusChanged) -> None:
        return None


async def published(event: DomainEvent) -> DomainEvent:
    async with session_scope() as session:
        await publish(session, event)
    return event


async def outbox_row(db: asyncpg.Connection, event_id: UUID) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM outbox_events WHERE id = $1", event_id)


async def jobs_for(db: asyncpg.Connection, event_id: UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT entrypoint, dedupe_key, payload, status, execute_after FROM pgqueuer "
        "WHERE dedupe_key LIKE $1 ORDER BY id",
        f"outbox:{event_id}%",
    )


# ------------------------------------------------------------------------------------ publish


async def test_publish_writes_the_row_and_the_dispatch_job_on_commit(db: asyncpg.Connection, subscribed: None) -> None:
    event = status_changed()
    async with session_scope() as session:
        await publish(session, event)
        # Not committed yet: another connection sees neither the row nor the job.
        assert await outbox_row(db, event.event_id) is None
        assert await jobs_for(db, event.event_id) == []

    row = await outbox_row(db, event.event_id)
    assert row is not None
    assert row["event_name"] == "message.status_changed"
    assert row["event_version"] == 1
    assert row["tenant_id"] == event.tenant_id
    assert row["correlation_id"] == event.correlation_id
    assert row["causation_id"] == "cause-1"
    assert row["dispatched_at"] is None
    assert row["attempts"] == 0
    payload = row["payload"] if isinstance(row["payload"], dict) else msgspec.json.decode(row["payload"])
    assert payload["status"] == "delivered"
    assert payload["message_id"] == str(event.message_id)

    [job] = await jobs_for(db, event.event_id)
    assert job["entrypoint"] == "outbox.dispatch"
    assert job["dedupe_key"] == f"outbox:{event.event_id}"
    assert UUID(bytes=bytes(job["payload"])) == event.event_id
    assert job["status"] == "queued"
    # PgQueuer's own enqueue wrote it (one statement with the row): its 'queued' log entry is there.
    logged = "SELECT count(*) FROM pgqueuer_log l JOIN pgqueuer q ON q.id = l.job_id WHERE q.dedupe_key = $1"
    assert await db.fetchval(logged + " AND l.status = 'queued'", f"outbox:{event.event_id}") == 1


async def test_rollback_leaves_neither_row_nor_job(db: asyncpg.Connection) -> None:
    event = status_changed()

    async def publish_then_fail() -> None:
        async with session_scope() as session:
            await publish(session, event)
            raise Boom

    with pytest.raises(Boom):
        await publish_then_fail()
    assert await outbox_row(db, event.event_id) is None
    assert await jobs_for(db, event.event_id) == []
    assert await db.fetchval("SELECT count(*) FROM pgqueuer") == 0


async def test_publish_refuses_an_event_that_breaks_the_catalog(db: asyncpg.Connection) -> None:
    event = status_changed(status=500)
    with pytest.raises(msgspec.ValidationError):
        async with session_scope() as session:
            await publish(session, event)
    assert await db.fetchval("SELECT count(*) FROM outbox_events") == 0
    assert await db.fetchval("SELECT count(*) FROM pgqueuer") == 0


# ------------------------------------------------------------------------------------ dispatch


async def test_dispatch_calls_the_handler_once_and_marks_the_row(db: asyncpg.Connection, handlers: None) -> None:
    seen: list[tuple[DomainEvent, str]] = []

    @subscriber(MessageStatusChanged)
    async def record(event: MessageStatusChanged) -> None:
        seen.append((event, current_correlation_id()))

    assert handlers_for("message.status_changed") == [record]
    event = await published(status_changed())
    await dispatch(event.event_id)

    assert [e for e, _ in seen] == [event]
    # The handler runs under the event's correlation id, so what it publishes continues the chain.
    assert seen[0][1] == event.correlation_id
    row = await outbox_row(db, event.event_id)
    assert row is not None
    assert row["dispatched_at"] is not None
    assert row["attempts"] == 1
    assert row["last_error"] is None

    await dispatch(event.event_id)  # a duplicate job: nothing happens
    assert len(seen) == 1
    again = await outbox_row(db, event.event_id)
    assert again is not None
    assert again["attempts"] == 1
    assert again["dispatched_at"] == row["dispatched_at"]


async def test_dispatch_without_subscribers_marks_the_row_dispatched(db: asyncpg.Connection, handlers: None) -> None:
    event = await published(status_changed())
    await dispatch(event.event_id)
    row = await outbox_row(db, event.event_id)
    assert row is not None
    assert row["dispatched_at"] is not None


async def test_dispatch_of_an_unknown_id_does_nothing(db: asyncpg.Connection, handlers: None) -> None:
    await dispatch(uuid4())
    assert await db.fetchval("SELECT count(*) FROM outbox_events_errors") == 0


async def test_every_subscriber_of_the_event_runs(db: asyncpg.Connection, handlers: None) -> None:
    calls: list[str] = []

    @subscriber(MessageStatusChanged)
    async def first(event: MessageStatusChanged) -> None:
        calls.append("first")

    @subscriber(MessageStatusChanged)
    async def second(event: MessageStatusChanged) -> None:
        calls.append("second")

    @subscriber(TenantCreated)
    async def other(event: TenantCreated) -> None:
        calls.append("other")

    await dispatch((await published(status_changed())).event_id)
    assert calls == ["first", "second"]


async def test_a_handler_settles_its_event_in_its_own_transaction(db: asyncpg.Connection, handlers: None) -> None:
    """`settle_on`: the row is dispatched exactly when the handler's transaction commits."""
    seen_inside: list[object] = []

    @subscriber(MessageStatusChanged)
    async def settles(event: MessageStatusChanged) -> None:
        async with hot_transaction() as connection:
            await settle_on(connection)
            seen_inside.append(await connection.fetchval(
                "SELECT dispatched_at FROM outbox_events WHERE id = $1", event.event_id
            ))  # fmt: skip
            assert await db.fetchval("SELECT dispatched_at FROM outbox_events WHERE id = $1", event.event_id) is None

    event = await published(status_changed())
    await dispatch(event.event_id)
    row = await outbox_row(db, event.event_id)
    assert row is not None
    assert row["dispatched_at"] == seen_inside[0]  # set by the handler's commit, not again after it
    assert row["attempts"] == 1


async def test_a_settling_transaction_rolled_back_leaves_the_event_to_retry(
    db: asyncpg.Connection, handlers: None
) -> None:
    @subscriber(MessageStatusChanged)
    async def fails_after_settling(event: MessageStatusChanged) -> None:
        async with hot_transaction() as connection:
            await settle_on(connection)
            raise Boom("commit lost")

    event = await published(status_changed())
    await dispatch(event.event_id)
    row = await outbox_row(db, event.event_id)
    assert row is not None
    assert row["dispatched_at"] is None
    assert row["last_error"] == "Boom: commit lost"


async def test_a_published_cte_settles_the_dispatched_event_in_the_handlers_statement(
    db: asyncpg.Connection, handlers: None
) -> None:
    """`published_cte`, as the first SMS's acceptance uses it: the new event's row written and the event
    being dispatched settled by the handler's own (autocommitted) statement."""
    published_here: list[FirstSmsSent] = []

    async def publish_in_one_statement(sent: FirstSmsSent) -> None:
        statement = f"WITH {published_cte('sent', 1)} SELECT 1"
        await (await hot_pool()).execute(statement, *published_values(sent))
        published_in_statement()

    @subscriber(MessageStatusChanged)
    async def publishes_last(event: MessageStatusChanged) -> None:
        sent = FirstSmsSent(tenant_id=uuid4(), call_id=uuid4(), message_id=uuid4(), latency_ms=1.0, correlation_id="c")
        await publish_in_one_statement(sent)
        published_here.append(sent)

    event = await published(status_changed())
    await dispatch(event.event_id)
    settled = await outbox_row(db, event.event_id)
    assert settled is not None and settled["dispatched_at"] is not None
    new_row = await outbox_row(db, published_here[0].event_id)
    assert new_row is not None and new_row["dispatched_at"] is None  # the new event is only published

    # Outside a dispatch, the CTE only publishes.
    alone = FirstSmsSent(tenant_id=uuid4(), call_id=uuid4(), message_id=uuid4(), latency_ms=1.0, correlation_id="c")
    await publish_in_one_statement(alone)
    alone_row = await outbox_row(db, alone.event_id)
    assert alone_row is not None and alone_row["dispatched_at"] is None


async def test_only_the_last_handler_settles(db: asyncpg.Connection, handlers: None) -> None:
    """An earlier handler's settle_on is ignored: the event is done only once every handler is."""

    @subscriber(MessageStatusChanged)
    async def first(event: MessageStatusChanged) -> None:
        async with hot_transaction() as connection:
            await settle_on(connection)

    @subscriber(MessageStatusChanged)
    async def second(event: MessageStatusChanged) -> None:
        raise Boom("second failed")

    event = await published(status_changed())
    await dispatch(event.event_id)
    row = await outbox_row(db, event.event_id)
    assert row is not None
    assert row["dispatched_at"] is None


async def test_a_failing_handler_backs_off_and_enqueues_a_retry(db: asyncpg.Connection, handlers: None) -> None:
    @subscriber(MessageStatusChanged)
    async def flaky(event: MessageStatusChanged) -> None:
        raise Boom("twilio timed out")

    event = await published(status_changed())
    await dispatch(event.event_id)

    row = await db.fetchrow(
        "SELECT *, available_at > now() AS in_future FROM outbox_events WHERE id = $1", event.event_id
    )
    assert row is not None
    assert row["dispatched_at"] is None
    assert row["attempts"] == 1
    assert row["last_error"] == "Boom: twilio timed out"
    assert row["in_future"], "available_at must be pushed out by the backoff"

    retry = [job for job in await jobs_for(db, event.event_id) if job["dedupe_key"] != f"outbox:{event.event_id}"]
    assert len(retry) == 1, "a retry job is enqueued"
    assert retry[0]["entrypoint"] == "outbox.dispatch"
    assert UUID(bytes=bytes(retry[0]["payload"])) == event.event_id
    assert retry[0]["execute_after"] > await db.fetchval("SELECT now()")

    # The row is not due yet: a retry job arriving early does not run the handler again.
    await dispatch(event.event_id)
    assert (await outbox_row(db, event.event_id))["attempts"] == 1  # type: ignore[index]


async def test_after_max_attempts_the_row_is_parked_intact(
    db: asyncpg.Connection, handlers: None, settings_env: Any
) -> None:
    settings_env(OUTBOX_MAX_ATTEMPTS="2")

    @subscriber(MessageStatusChanged)
    async def broken(event: MessageStatusChanged) -> None:
        raise Boom("still down")

    event = await published(status_changed())
    original = await outbox_row(db, event.event_id)
    await dispatch(event.event_id)
    assert await outbox_row(db, event.event_id) is not None
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE id = $1", event.event_id)
    await dispatch(event.event_id)

    assert await outbox_row(db, event.event_id) is None
    parked = await db.fetchrow("SELECT * FROM outbox_events_errors WHERE id = $1", event.event_id)
    assert parked is not None
    assert original is not None
    for column in (
        "event_name",
        "event_version",
        "tenant_id",
        "payload",
        "correlation_id",
        "causation_id",
        "created_at",
    ):
        assert parked[column] == original[column], column
    assert parked["attempts"] == 2
    assert parked["last_error"] == "Boom: still down"
    assert parked["dispatched_at"] is None
    assert parked["failed_at"] is not None


async def test_permanent_failure_parks_at_once(db: asyncpg.Connection, handlers: None) -> None:
    @subscriber(MessageStatusChanged)
    async def refuse(event: MessageStatusChanged) -> None:
        raise PermanentFailure("number is not SMS-capable")

    event = await published(status_changed())
    await dispatch(event.event_id)
    assert await outbox_row(db, event.event_id) is None
    parked = await db.fetchrow("SELECT * FROM outbox_events_errors WHERE id = $1", event.event_id)
    assert parked is not None
    assert parked["attempts"] == 1
    assert parked["last_error"] == "PermanentFailure: number is not SMS-capable"
    assert parked["correlation_id"] == event.correlation_id


async def test_a_row_that_no_longer_fits_the_catalog_is_parked_without_calling_handlers(
    db: asyncpg.Connection, handlers: None
) -> None:
    calls: list[DomainEvent] = []

    @subscriber(MessageStatusChanged)
    async def record(event: MessageStatusChanged) -> None:
        calls.append(event)

    event = await published(status_changed())
    await db.execute("UPDATE outbox_events SET payload = payload - 'message_id' WHERE id = $1", event.event_id)
    await dispatch(event.event_id)

    assert calls == []
    assert await outbox_row(db, event.event_id) is None
    last_error = await db.fetchval("SELECT last_error FROM outbox_events_errors WHERE id = $1", event.event_id)
    assert last_error.startswith("catalog:")
    assert "message_id" in last_error


async def test_a_row_naming_an_unknown_event_is_parked(db: asyncpg.Connection, handlers: None) -> None:
    event_id = uuid4()
    await db.execute(
        "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id) "
        "VALUES ($1, 'tenant.created', 42, '{}'::jsonb, 'c')",
        event_id,
    )
    await dispatch(event_id)
    assert await outbox_row(db, event_id) is None
    last_error = await db.fetchval("SELECT last_error FROM outbox_events_errors WHERE id = $1", event_id)
    assert "tenant.created v42 is not in the Event Catalog" in last_error


# ------------------------------------------------------------------------------------ sweep


async def test_sweep_re_enqueues_only_due_undispatched_rows(db: asyncpg.Connection, subscribed: None) -> None:
    due, later, done = uuid4(), uuid4(), uuid4()
    insert = (
        "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id, available_at, "
        "dispatched_at) VALUES ($1, 'message.status_changed', 1, '{}'::jsonb, 'c', now() + $2::interval, $3)"
    )
    await db.execute(insert, due, timedelta(seconds=-5), None)
    await db.execute(insert, later, timedelta(minutes=5), None)
    await db.execute(insert, done, timedelta(seconds=-5), await db.fetchval("SELECT now()"))

    assert await sweep() == 1
    [job] = await db.fetch("SELECT entrypoint, dedupe_key, payload FROM pgqueuer")
    assert job["entrypoint"] == "outbox.dispatch"
    assert job["dedupe_key"] == f"outbox:{due}"
    assert UUID(bytes=bytes(job["payload"])) == due

    # A second sweep while the job still waits adds nothing (same dedupe key).
    assert await sweep() == 1
    assert await db.fetchval("SELECT count(*) FROM pgqueuer") == 1


async def test_publishing_never_consults_the_subscribers_so_a_new_worker_handles_an_old_webs_event(
    db: asyncpg.Connection, handlers: None
) -> None:
    # An old web, which knows no subscriber of this event, publishes it ...
    event = await published(status_changed())
    row = await outbox_row(db, event.event_id)
    assert row is not None and row["dispatched_at"] is None
    assert len(await jobs_for(db, event.event_id)) == 1
    seen: list[DomainEvent] = []

    # ... and the new worker, which subscribes to it, dispatches it.
    @subscriber(MessageStatusChanged)
    async def new_subscriber(event: MessageStatusChanged) -> None:
        seen.append(event)

    await dispatch(event.event_id)
    assert seen == [event]


async def test_an_event_nobody_handles_is_settled_by_its_dispatch(db: asyncpg.Connection, handlers: None) -> None:
    event = await published(status_changed())
    await dispatch(event.event_id)
    row = await outbox_row(db, event.event_id)
    assert row is not None and row["dispatched_at"] is not None


async def test_an_event_that_wakes_no_worker_is_settled_or_dispatched_by_the_sweep(
    db: asyncpg.Connection, handlers: None
) -> None:
    sent = FirstSmsSent(tenant_id=uuid4(), call_id=uuid4(), message_id=uuid4(), latency_ms=12.5, correlation_id="c")
    await published(sent)
    assert await jobs_for(db, sent.event_id) == []  # written without a job: one fewer per first SMS
    assert await sweep() == 0  # nobody handles it here: settled in bulk, no job
    row = await outbox_row(db, sent.event_id)
    assert row is not None and row["dispatched_at"] is not None

    later = FirstSmsSent(tenant_id=uuid4(), call_id=uuid4(), message_id=uuid4(), latency_ms=9.0, correlation_id="c")
    await published(later)

    @subscriber(FirstSmsSent)
    async def now_handled(event: FirstSmsSent) -> None:
        return None

    assert await sweep() == 1  # a worker that handles it dispatches it
    assert len(await jobs_for(db, later.event_id)) == 1


async def test_sweep_does_not_duplicate_the_job_publish_already_enqueued(
    db: asyncpg.Connection, subscribed: None
) -> None:
    event = await published(status_changed())
    assert await sweep() == 1
    assert len(await jobs_for(db, event.event_id)) == 1


# ------------------------------------------------------------------------------------ backoff


def test_backoff_grows_with_attempts_and_is_capped() -> None:
    for attempts, low, high in ((1, 0.5, 1.0), (2, 1.0, 2.0), (3, 2.0, 4.0), (6, 16.0, 32.0)):
        for _ in range(50):
            assert low <= backoff(attempts).total_seconds() <= high, attempts
    assert all(backoff(50).total_seconds() <= 600 for _ in range(50))
    assert max(backoff(3) for _ in range(50)) < min(backoff(6) for _ in range(50))


def test_backoff_is_jittered() -> None:
    delays = {backoff(5).total_seconds() for _ in range(30)}
    assert len(delays) > 20, "retries of a burst must not line up"


async def test_backoff_is_what_the_row_waits(db: asyncpg.Connection, handlers: None) -> None:
    @subscriber(MessageStatusChanged)
    async def flaky(event: MessageStatusChanged) -> None:
        raise Boom("x")

    event = await published(status_changed())
    await dispatch(event.event_id)
    wait = await db.fetchval(
        "SELECT extract(epoch FROM available_at - now()) FROM outbox_events WHERE id = $1", event.event_id
    )
    assert 0 < float(wait) <= 1.0  # first retry: up to 1 s


# ------------------------------------------------------------------------------ commit modes


async def test_the_claim_commits_without_waiting_for_the_disk_and_leaves_the_session_as_it_was(
    db: asyncpg.Connection, subscribed: None
) -> None:
    """ADR 0021: the claim's own transaction runs with `synchronous_commit = off` (seen inside an explicit
    transaction, where the statement's `set_config(..., true)` lasts until COMMIT); the connection's
    setting is untouched afterwards, so the statements that must be durable still wait for the disk."""
    from nmc.events.dispatcher import _CLAIM, _dispatcher_id

    event = await published(status_changed())
    async with db.transaction():
        assert await db.fetchval("SHOW synchronous_commit") == "on"
        claimed = await db.fetchrow(_CLAIM, event.event_id, 30.0, _dispatcher_id)
        assert claimed is not None and claimed["attempts"] == 1
        assert await db.fetchval("SHOW synchronous_commit") == "off"
    assert await db.fetchval("SHOW synchronous_commit") == "on"
    row = await outbox_row(db, event.event_id)
    assert row is not None and row["attempts"] == 1 and row["claimed_by"] == _dispatcher_id

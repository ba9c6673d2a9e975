"""Replaying parked events (`nmc replay-outbox`, `nmc.events.replay`) against the real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from nmc.db import session_scope
from nmc.events.catalog import DomainEvent, MessageStatusChanged, OutboundSmsRequested, TenantCreated, validated
from nmc.events.dispatcher import PermanentFailure, dispatch
from nmc.events.outbox import publish
from nmc.events.replay import ReplayFilter, replay
from nmc.events.subscribers import subscriber
from tests.conftest import run_cli
from tests.integration.test_first_sms import CALLER, dispatch_pending, first_sms_rows
from tests.integration.twilio_webhooks import missed_call

EFFECTS_TABLE = "test_replay_effects"


@pytest.fixture
async def effects_table(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A table with a unique key, as an idempotent subscriber's effect would have."""
    await db.execute(f"CREATE TABLE {EFFECTS_TABLE} (event_id uuid PRIMARY KEY, effect text NOT NULL)")
    try:
        yield EFFECTS_TABLE
    finally:
        await db.execute(f"DROP TABLE IF EXISTS {EFFECTS_TABLE}")


def status_event() -> MessageStatusChanged:
    return MessageStatusChanged(
        tenant_id=uuid4(), message_id=uuid4(), status="failed", error_code=30003, correlation_id="corr-replay"
    )


async def park(
    db: asyncpg.Connection,
    event: DomainEvent,
    *,
    created_at: datetime | None = None,
    payload: dict[str, Any] | None = None,
    attempts: int = 10,
) -> UUID:
    """A row in outbox_events_errors as the dispatcher leaves it."""
    await db.execute(
        "INSERT INTO outbox_events_errors (id, event_name, event_version, tenant_id, payload, correlation_id, "
        "causation_id, created_at, attempts, last_error) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, coalesce($8, now()), $9, 'Boom: provider down')",
        event.event_id,
        event.name,
        event.version,
        event.tenant_id,
        msgspec.json.encode(payload if payload is not None else validated(event)).decode(),
        event.correlation_id,
        event.causation_id,
        created_at,
        attempts,
    )
    return event.event_id


async def parked_ids(db: asyncpg.Connection) -> set[UUID]:
    return {r["id"] for r in await db.fetch("SELECT id FROM outbox_events_errors")}


async def outbox_ids(db: asyncpg.Connection) -> set[UUID]:
    return {r["id"] for r in await db.fetch("SELECT id FROM outbox_events")}


async def assert_replayed(db: asyncpg.Connection, event_id: UUID) -> None:
    row = await db.fetchrow(
        "SELECT attempts, dispatched_at, available_at <= now() AS due FROM outbox_events WHERE id = $1", event_id
    )
    assert row is not None, f"{event_id} is not back in outbox_events"
    assert row["attempts"] == 0
    assert row["dispatched_at"] is None
    assert row["due"]
    job = await db.fetchrow(
        "SELECT entrypoint, payload FROM pgqueuer WHERE dedupe_key = $1 AND status = 'queued'", f"outbox:{event_id}"
    )
    assert job is not None, "a dispatch job is enqueued"
    assert job["entrypoint"] == "outbox.dispatch"
    assert UUID(bytes=bytes(job["payload"])) == event_id
    assert await db.fetchval("SELECT count(*) FROM outbox_events_errors WHERE id = $1", event_id) == 0


async def test_replay_by_event_id_moves_only_that_row_back(db: asyncpg.Connection) -> None:
    wanted = await park(db, status_event())
    other = await park(db, status_event())

    report = await replay(ReplayFilter(event_ids=[wanted]))

    assert [row.id for row in report.replayed] == [wanted]
    assert report.invalid == []
    await assert_replayed(db, wanted)
    assert await parked_ids(db) == {other}
    assert await outbox_ids(db) == {wanted}
    payload = await db.fetchval("SELECT payload FROM outbox_events WHERE id = $1", wanted)
    assert msgspec.json.decode(payload)["error_code"] == 30003
    assert await db.fetchval("SELECT correlation_id FROM outbox_events WHERE id = $1", wanted) == "corr-replay"


async def test_replay_by_event_name(db: asyncpg.Connection) -> None:
    statuses = {await park(db, status_event()) for _ in range(2)}
    tenant = await park(db, TenantCreated(tenant_id=uuid4(), business_name="Acme", correlation_id="c"))

    report = await replay(ReplayFilter(event_name="message.status_changed"))

    assert {row.id for row in report.replayed} == statuses
    for event_id in statuses:
        await assert_replayed(db, event_id)
    assert await parked_ids(db) == {tenant}


async def test_replay_by_time_range(db: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    too_old = await park(db, status_event(), created_at=now - timedelta(days=3))
    in_range = await park(db, status_event(), created_at=now - timedelta(hours=30))
    too_new = await park(db, status_event(), created_at=now - timedelta(hours=1))

    report = await replay(ReplayFilter(since=now - timedelta(days=2), until=now - timedelta(days=1)))

    assert [row.id for row in report.replayed] == [in_range]
    await assert_replayed(db, in_range)
    assert await parked_ids(db) == {too_old, too_new}


async def test_dry_run_lists_and_changes_nothing(db: asyncpg.Connection) -> None:
    ids = {await park(db, status_event()) for _ in range(2)}
    before = await db.fetch("SELECT * FROM outbox_events_errors ORDER BY id")

    report = await replay(ReplayFilter(event_name="message.status_changed"), dry_run=True)

    assert {row.id for row in report.replayed} == ids
    assert all(line.startswith("would requeue") for line in report.lines())
    assert await db.fetch("SELECT * FROM outbox_events_errors ORDER BY id") == before
    assert await outbox_ids(db) == set()
    assert await db.fetchval("SELECT count(*) FROM pgqueuer") == 0


async def test_a_parked_row_that_no_longer_fits_the_catalog_is_kept_and_reported(db: asyncpg.Connection) -> None:
    good = await park(db, status_event())
    broken_event = status_event()
    broken_payload = {k: v for k, v in validated(broken_event).items() if k != "message_id"}
    broken = await park(db, broken_event, payload=broken_payload)
    retired_event = status_event()
    await park(db, retired_event)
    await db.execute("UPDATE outbox_events_errors SET event_version = 99 WHERE id = $1", retired_event.event_id)

    report = await replay(ReplayFilter(event_name="message.status_changed"))

    assert [row.id for row in report.replayed] == [good]
    assert {row.id for row, _ in report.invalid} == {broken, retired_event.event_id}
    reasons = {row.id: reason for row, reason in report.invalid}
    assert "message_id" in reasons[broken]
    assert "v99" in reasons[retired_event.event_id]
    await assert_replayed(db, good)
    assert await parked_ids(db) == {broken, retired_event.event_id}
    lines = report.lines()
    assert any(line.startswith(f"kept {broken}") for line in lines)
    assert lines[-1] == "requeued 1, kept 2 that no longer fit the catalog"


async def test_nothing_selected_is_a_clean_no_op(db: asyncpg.Connection) -> None:
    await park(db, status_event())
    report = await replay(ReplayFilter(event_ids=[uuid4()]))
    assert report.replayed == [] and report.invalid == []
    assert report.lines() == ["requeued 0, kept 0 that no longer fit the catalog"]
    assert len(await parked_ids(db)) == 1


async def test_replaying_a_handled_event_does_not_repeat_its_effect(
    db: asyncpg.Connection, handlers: None, effects_table: str
) -> None:
    calls = {"effect": 0, "audit": 0}

    @subscriber(MessageStatusChanged)
    async def record_effect(event: MessageStatusChanged) -> None:
        calls["effect"] += 1
        async with session_scope() as session:
            await session.execute(
                text(f"INSERT INTO {effects_table} (event_id, effect) VALUES (:id, :effect) ON CONFLICT DO NOTHING"),
                {"id": event.event_id, "effect": f"status {event.status}"},
            )

    @subscriber(MessageStatusChanged)
    async def audit(event: MessageStatusChanged) -> None:
        calls["audit"] += 1
        if calls["audit"] == 1:
            raise PermanentFailure("audit store rejected the event")

    event = status_event()
    async with session_scope() as session:
        await publish(session, event)
    await dispatch(event.event_id)  # the effect happens, then the second subscriber parks the event
    assert await parked_ids(db) == {event.event_id}
    assert await db.fetchval(f"SELECT count(*) FROM {effects_table}") == 1

    report = await replay(ReplayFilter(event_ids=[event.event_id]))
    assert [row.id for row in report.replayed] == [event.event_id]
    await assert_replayed(db, event.event_id)

    await dispatch(event.event_id)
    assert calls == {"effect": 2, "audit": 2}  # at-least-once: the handler did run again ...
    assert await db.fetchval(f"SELECT count(*) FROM {effects_table}") == 1  # ... and changed nothing
    assert await db.fetchval("SELECT dispatched_at IS NOT NULL FROM outbox_events WHERE id = $1", event.event_id)
    assert await parked_ids(db) == set()


# ------------------------------------------------------------------------------------ CLI


async def test_cli_dry_run_by_event_id_lists_and_changes_nothing(db: asyncpg.Connection) -> None:
    wanted = await park(db, status_event())
    other = await park(db, status_event())
    before = await db.fetch("SELECT * FROM outbox_events_errors ORDER BY id")

    dry = run_cli("replay-outbox", "--event-id", str(wanted), "--dry-run")

    lines = dry.stdout.splitlines()
    assert lines[0].startswith(f"would requeue {wanted} message.status_changed@v1 (last error: Boom: provider down)")
    assert lines[-1] == "would requeue 1, kept 0 that no longer fit the catalog"
    assert str(other) not in dry.stdout
    assert await db.fetch("SELECT * FROM outbox_events_errors ORDER BY id") == before
    assert await outbox_ids(db) == set()
    assert await db.fetchval("SELECT count(*) FROM pgqueuer") == 0


async def test_cli_replay_by_name_and_time_range_reports_kept_rows(db: asyncpg.Connection) -> None:
    now = datetime.now(UTC)
    good = await park(db, status_event(), created_at=now - timedelta(hours=2))
    bad_event = status_event()
    bad = await park(db, bad_event, created_at=now - timedelta(hours=2), payload={**validated(bad_event), "status": 7})
    outside = await park(db, status_event(), created_at=now - timedelta(days=5))

    result = run_cli(
        "replay-outbox",
        "--event-name",
        "message.status_changed",
        "--since",
        (now - timedelta(days=1)).isoformat(),
        "--until",
        now.isoformat(),
    )
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"requeued {good}") for line in lines)
    assert any(line.startswith(f"kept {bad}") for line in lines)
    assert lines[-1] == "requeued 1, kept 1 that no longer fit the catalog"
    await assert_replayed(db, good)
    assert await parked_ids(db) == {bad, outside}


async def test_cli_refuses_to_replay_without_a_filter(db: asyncpg.Connection) -> None:
    await park(db, status_event())
    nothing = run_cli("replay-outbox", check=False)
    assert nothing.returncode != 0
    assert "--event-id" in nothing.stderr
    assert "Traceback" not in nothing.stderr
    assert len(await parked_ids(db)) == 1
    assert await outbox_ids(db) == set()


# ------------------------------------------------------------------------------------ texts of replayed events


async def test_replaying_a_parked_first_sms_sends_it_and_says_so(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"status": 400, "code": 21606}])  # our From number, fixed by the operator since
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    [message] = await first_sms_rows(db)
    assert (message["status"], message["error_code"], message["twilio_sid"]) == ("failed", 21606, None)
    [event_id] = await parked_ids(db)

    dry = run_cli("replay-outbox", "--event-name", "call.missed", "--dry-run").stdout.splitlines()
    assert f"text {message['id']} of event {event_id}: would be sent: reopened" in "\n".join(dry)
    assert dry[-1] == "texts: 1 would be sent, 0 skipped"
    assert (await first_sms_rows(db))[0]["status"] == "failed"  # a dry run changes nothing

    lines = run_cli("replay-outbox", "--event-name", "call.missed").stdout.splitlines()
    assert lines[-2:] == [
        f"text {message['id']} of event {event_id}: will be sent: reopened (it failed with code 21606 before "
        "Twilio had it)",
        "texts: 1 will be sent, 0 skipped",
    ]
    [message] = await first_sms_rows(db)
    assert (message["status"], message["error_code"]) == ("pending", None)
    await dispatch_pending(db)
    [text] = [m for m in fake_twilio.messages() if m["sid"]]
    [message] = await first_sms_rows(db)
    assert (message["status"], message["twilio_sid"]) == ("accepted", text["sid"])
    assert await parked_ids(db) == set()


async def test_replay_says_which_texts_it_skips_and_why(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    [first] = await first_sms_rows(db)  # accepted by Twilio
    refused = uuid4()
    await db.execute(
        "INSERT INTO conv_messages (id, tenant_id, thread_id, idempotency_key, direction, kind, to_number, from_number,"
        " body, status, error_code) VALUES ($1, $2, $3, 'reply:refused', 'outbound', 'reply', $4, $5, 'hi', 'failed',"
        " 21211)",
        refused,
        first["tenant_id"],
        first["thread_id"],
        CALLER,
        tenant.number,
    )
    events = {
        "accepted": outbound_event(first["tenant_id"], first["id"], first["thread_id"]),
        "refused": outbound_event(first["tenant_id"], refused, first["thread_id"]),
        "gone": outbound_event(first["tenant_id"], uuid4(), first["thread_id"]),
    }
    for event in events.values():
        await park(db, event)

    lines = run_cli("replay-outbox", "--event-name", "sms.outbound_requested").stdout.splitlines()
    text = "\n".join(lines)
    assert f"of event {events['accepted'].event_id}: skipped: accepted already ({first['twilio_sid']})" in text
    assert f"of event {events['refused'].event_id}: skipped: recipient refused (code 21211)" in text
    assert f"text of event {events['gone'].event_id}: skipped: message gone" in text
    assert lines[-1] == "texts: 0 will be sent, 3 skipped (1 accepted already, 1 recipient refused, 1 message gone)"
    assert await db.fetchval("SELECT status FROM conv_messages WHERE id = $1", refused) == "failed"
    await dispatch_pending(db)
    assert len([m for m in fake_twilio.messages() if m["sid"]]) == 1  # nothing more was sent


def outbound_event(tenant_id: UUID, message_id: UUID, thread_id: UUID) -> OutboundSmsRequested:
    return OutboundSmsRequested(
        tenant_id=tenant_id, message_id=message_id, thread_id=thread_id, kind="reply", correlation_id="corr-replay"
    )

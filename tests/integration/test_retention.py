"""Retention deletes of runbook §8, and the Dramatiq actor's wiring to the Postgres broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def retention() -> Any:
    """The jobs package as the jobs process imports it (installs the Postgres broker)."""
    import jobs

    return jobs


async def webhook_event(db: asyncpg.Connection, age: timedelta) -> UUID:
    event_id = uuid4()
    await db.execute(
        "INSERT INTO webhook_events (id, provider, external_id, kind, payload, received_at) "
        "VALUES ($1, 'twilio', $2, 'voice.dial-status', '{}'::jsonb, now() - $3::interval)",
        event_id,
        f"dial-status:{event_id}",
        age,
    )
    return event_id


async def outbox_event(db: asyncpg.Connection, created_age: timedelta, dispatched_age: timedelta | None) -> UUID:
    event_id = uuid4()
    await db.execute(
        "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id, created_at, "
        "dispatched_at) VALUES ($1, 'tenant.created', 1, '{}'::jsonb, 'c', now() - $2::interval, "
        "now() - $3::interval)",
        event_id,
        created_age,
        dispatched_age,
    )
    return event_id


async def conv_message(db: asyncpg.Connection, tenant_id: str, thread_id: UUID, age: timedelta) -> UUID:
    message_id = uuid4()
    await db.execute(
        "INSERT INTO conv_messages (id, tenant_id, thread_id, direction, kind, to_number, from_number, body, "
        "status, created_at) VALUES ($1, $2::uuid, $3, 'outbound', 'reply', '+15550001111', '+15550002222', "
        "'hello', 'sent', now() - $4::interval)",
        message_id,
        tenant_id,
        thread_id,
        age,
    )
    return message_id


async def ids(db: asyncpg.Connection, table: str) -> set[UUID]:
    return {r["id"] for r in await db.fetch(f"SELECT id FROM {table}")}


async def test_purge_deletes_exactly_the_expired_rows(db: asyncpg.Connection, make_tenant: Any, retention: Any) -> None:
    day = timedelta(days=1)
    old_hooks = {await webhook_event(db, 91 * day), await webhook_event(db, 400 * day)}
    recent_hook = await webhook_event(db, 89 * day)

    dispatched_long_ago = await outbox_event(db, 40 * day, 31 * day)
    dispatched_recently = await outbox_event(db, 29 * day, 29 * day)
    old_but_dispatched_yesterday = await outbox_event(db, 60 * day, day)
    old_undispatched = await outbox_event(db, 60 * day, None)

    tenant = await make_tenant()
    thread = uuid4()
    await db.execute(
        "INSERT INTO conv_threads (id, tenant_id, caller, tenant_number, status) "
        "VALUES ($1, $2::uuid, '+15550001111', $3, 'closed')",
        thread,
        tenant.id,
        tenant.number,
    )
    old_message = await conv_message(db, tenant.id, thread, 181 * day)
    kept_message = await conv_message(db, tenant.id, thread, 179 * day)
    for sid, age in (("SM" + "a" * 32, 8 * day), ("SM" + "b" * 32, 6 * day)):  # status callbacks never claimed
        await db.execute(
            "INSERT INTO conv_early_statuses (message_sid, status, received_at)"
            " VALUES ($1, 'sent', now() - $2::interval)",
            sid,
            age,
        )
    outbox_before = await ids(db, "outbox_events")  # includes the tenant's own tenant.created

    # The actor's own function, as the jobs process runs it.
    assert await asyncio.to_thread(retention.purge_expired_rows.fn) is None

    assert await ids(db, "webhook_events") == {recent_hook}
    remaining = await ids(db, "outbox_events")
    assert remaining == outbox_before - {dispatched_long_ago}
    assert {dispatched_recently, old_but_dispatched_yesterday, old_undispatched} <= remaining
    assert old_hooks.isdisjoint(await ids(db, "webhook_events"))
    assert await ids(db, "conv_messages") == {kept_message}
    assert old_message not in await ids(db, "conv_messages")
    assert [r["message_sid"] for r in await db.fetch("SELECT message_sid FROM conv_early_statuses")] == [
        "SM" + "b" * 32
    ]

    # Nothing left to purge: a second run deletes nothing.
    assert await asyncio.to_thread(retention.retention.purge_expired) == {
        "webhook_events": 0,
        "outbox_events": 0,
        "conv_messages": 0,
        "conv_early_statuses": 0,
        "pgqueuer_log": 0,
    }


async def test_pgqueuers_job_history_is_kept_a_week(db: asyncpg.Connection, retention: Any) -> None:
    for job_id, days in ((1, 8), (2, 6)):
        await db.execute(
            "INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority, created) "
            "VALUES ($1, 'successful', 'outbox.dispatch', 0, now() - make_interval(days => $2))",
            job_id,
            days,
        )
    assert (await asyncio.to_thread(retention.retention.purge_expired))["pgqueuer_log"] == 1
    assert [row["job_id"] for row in await db.fetch("SELECT job_id FROM pgqueuer_log")] == [2]


async def test_purge_reports_what_each_rule_deleted(db: asyncpg.Connection, retention: Any) -> None:
    day = timedelta(days=1)
    for _ in range(2):
        await webhook_event(db, 91 * day)
    await webhook_event(db, day)
    await outbox_event(db, 40 * day, 31 * day)
    await outbox_event(db, 40 * day, None)
    assert await asyncio.to_thread(retention.retention.purge_expired) == {
        "webhook_events": 2,
        "outbox_events": 1,
        "conv_messages": 0,
        "conv_early_statuses": 0,
        "pgqueuer_log": 0,
    }


async def test_purge_works_in_batches(db: asyncpg.Connection, retention: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs import retention as module

    monkeypatch.setattr(module, "BATCH", 2)
    for _ in range(5):
        await webhook_event(db, timedelta(days=100))
    kept = await webhook_event(db, timedelta(days=1))
    counts = await asyncio.to_thread(module.purge_expired)
    assert counts["webhook_events"] == 5
    assert await ids(db, "webhook_events") == {kept}


async def queued_messages(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT queue_name, state::text AS state, message FROM dramatiq.queue")
    return [
        {**dict(r), "message": r["message"] if isinstance(r["message"], dict) else json.loads(r["message"])}
        for r in rows
    ]


async def test_send_writes_the_message_into_the_postgres_broker(db: asyncpg.Connection, retention: Any) -> None:
    await asyncio.to_thread(retention.purge_expired_rows.send)
    [row] = await queued_messages(db)
    assert row["queue_name"] == "maintenance"
    assert row["state"] == "queued"
    assert row["message"]["actor_name"] == "purge_expired_rows"


async def test_the_worker_schedule_hands_retention_to_the_jobs_queue(db: asyncpg.Connection, retention: Any) -> None:
    from nmc.worker import on_retention

    await on_retention(None)  # type: ignore[arg-type]  # the schedule object is not read
    [row] = await queued_messages(db)
    assert row["queue_name"] == "maintenance"
    assert row["message"]["actor_name"] == "purge_expired_rows"


async def test_the_jobs_process_consumes_the_message_and_purges(
    db: asyncpg.Connection, retention: Any, tmp_path: Path
) -> None:
    expired = await webhook_event(db, timedelta(days=120))
    kept = await webhook_event(db, timedelta(days=2))
    await asyncio.to_thread(retention.purge_expired_rows.send)
    assert len(await queued_messages(db)) == 1

    log_path = tmp_path / "jobs.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nmc", "jobs", "--threads", "1"],
            env={**os.environ, "LOG_LEVEL": "INFO"},
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline and process.poll() is None:
                if not await queued_messages(db) and expired not in await ids(db, "webhook_events"):
                    break
                await asyncio.sleep(0.2)
            output = log_path.read_text()
            assert await queued_messages(db) == [], f"the jobs process did not consume the message:\n{output[-3000:]}"
            assert await ids(db, "webhook_events") == {kept}
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, log_path.read_text()[-3000:]

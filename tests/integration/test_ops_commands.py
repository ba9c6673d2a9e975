"""Runbook actions as commands (issue #13), run as an operator runs them (`nmc …`, a real process)
against the real test database: park, retention run, read-only `just sql`, blocking queries, and
Twilio signatures from the previous auth token during a rotation."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from twilio.request_validator import RequestValidator

from tests.conftest import TEST_DATABASE_URL, TEST_ENVIRONMENT, run_cli
from tests.integration.twilio_webhooks import missed_call

CALLER = "+15557650000"


async def _missed_call_event(client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any) -> str:
    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    return str(await db.fetchval("SELECT id FROM outbox_events WHERE event_name = 'call.missed'"))


# ------------------------------------------------------------------------------ just park


async def test_park_moves_a_conforming_event_with_the_reason(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    event_id = await _missed_call_event(client, db, make_tenant)
    await db.execute(
        "UPDATE outbox_events SET attempts = 7, last_error = 'SmsOutcomeUnknown: 502' WHERE id = $1", event_id
    )
    result = await asyncio.to_thread(run_cli, "park", event_id, "--reason", "poison: template crashes")
    assert "parked" in result.stdout and "SmsOutcomeUnknown: 502" in result.stdout
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE id = $1", event_id) == 0
    parked = await db.fetchrow("SELECT * FROM outbox_events_errors WHERE id = $1", event_id)
    assert parked["last_error"] == "parked by operator: poison: template crashes"
    assert parked["attempts"] == 7 and parked["event_name"] == "call.missed"
    # and it can be replayed as it is
    replayed = await asyncio.to_thread(run_cli, "replay-outbox", "--event-id", event_id, "--dry-run")
    assert event_id in replayed.stdout


async def test_park_refuses_what_would_break_the_catalog_or_is_not_there(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    event_id = await _missed_call_event(client, db, make_tenant)
    payload = await db.fetchval("SELECT payload FROM outbox_events WHERE id = $1", event_id)
    broken = {**json.loads(payload), "caller": 42}
    await db.execute("UPDATE outbox_events SET payload = $2::jsonb WHERE id = $1", event_id, json.dumps(broken))
    refused = await asyncio.to_thread(run_cli, "park", event_id, "--reason", "x", check=False)
    assert refused.returncode != 0 and "does not conform to the Event Catalog" in refused.stderr
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE id = $1", event_id) == 1

    await db.execute(
        "UPDATE outbox_events SET payload = $2::jsonb, dispatched_at = now() WHERE id = $1", event_id, payload
    )
    refused = await asyncio.to_thread(run_cli, "park", event_id, "--reason", "x", check=False)
    assert refused.returncode != 0 and "nothing to park" in refused.stderr

    missing = await asyncio.to_thread(
        run_cli, "park", "00000000-0000-0000-0000-000000000000", "--reason", "x", check=False
    )
    assert missing.returncode != 0 and "no such outbox event" in missing.stderr
    blank = await asyncio.to_thread(run_cli, "park", event_id, "--reason", "  ", check=False)
    assert blank.returncode != 0


# ------------------------------------------------------------------------------ just retention-run


async def test_retention_run_deletes_expired_rows_and_says_how_many(db: asyncpg.Connection) -> None:
    insert = (
        "INSERT INTO webhook_events (id, provider, external_id, kind, received_at, payload) "
        "VALUES (gen_random_uuid(), 'twilio', $1, 'test', now() - $2::interval, '{}'::jsonb)"
    )
    await db.execute(insert, "old", timedelta(days=91))
    await db.execute(insert, "new", timedelta(days=1))
    result = await asyncio.to_thread(run_cli, "retention", "run")
    assert "webhook_events: 1 rows deleted" in result.stdout
    assert await db.fetchval("SELECT array_agg(external_id) FROM webhook_events") == ["new"]
    assert await db.fetchval("SELECT task FROM obs_maintenance_runs") == "retention"


# ------------------------------------------------------------------------------ just sql


async def test_every_ops_query_runs_read_only(db: asyncpg.Connection) -> None:
    """In-process, what `nmc sql NAME` runs (the command itself: test_cli.py)."""
    from nmc.ops import named_queries, run_named_query

    names = named_queries()
    assert "blocking_queries" in names and "outbox_lag" in names
    for name in names:
        assert isinstance(await run_named_query(name), list), name


async def test_a_query_that_writes_is_refused(
    db: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nmc.ops

    (tmp_path / "sneaky.sql").write_text("DELETE FROM outbox_events RETURNING id")
    monkeypatch.setattr(nmc.ops, "QUERIES_DIR", tmp_path)
    with pytest.raises(Exception, match="read-only transaction"):
        await nmc.ops.run_named_query("sneaky")


async def test_blocking_queries_names_the_real_blocker_and_no_false_one(db: asyncpg.Connection) -> None:
    """A waits on B's row lock; C waits on B's advisory lock 1 while D holds advisory lock 2: the old
    pg_locks join matched any two advisory locks (same database, NULL relation) and named D too."""
    holder, bystander, waiter, advisory_waiter = [await asyncpg.connect(TEST_DATABASE_URL) for _ in range(4)]
    try:
        await db.execute("CREATE TABLE IF NOT EXISTS lock_probe (id int PRIMARY KEY)")
        await db.execute("INSERT INTO lock_probe VALUES (1) ON CONFLICT DO NOTHING")
        await holder.execute("BEGIN")
        await holder.execute("UPDATE lock_probe SET id = 1 WHERE id = 1")
        await holder.execute("SELECT pg_advisory_lock(1)")
        await bystander.execute("SELECT pg_advisory_lock(2)")
        blocked = asyncio.create_task(waiter.execute("UPDATE lock_probe SET id = 1 WHERE id = 1"))
        advisory = asyncio.create_task(advisory_waiter.execute("SELECT pg_advisory_lock(1)"))
        pids = {
            "holder": holder.get_server_pid(),
            "bystander": bystander.get_server_pid(),
            "waiter": waiter.get_server_pid(),
            "advisory_waiter": advisory_waiter.get_server_pid(),
        }
        for _ in range(50):
            waiting = await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            if waiting >= 2:
                break
            await asyncio.sleep(0.05)
        rows = json.loads((await asyncio.to_thread(run_cli, "sql", "blocking_queries")).stdout)
        pairs = {(row["blocked_pid"], row["blocking_pid"]) for row in rows}
        assert pairs == {(pids["waiter"], pids["holder"]), (pids["advisory_waiter"], pids["holder"])}
        await holder.execute("ROLLBACK")
        await holder.execute("SELECT pg_advisory_unlock_all()")
        await asyncio.wait_for(asyncio.gather(blocked, advisory), 5)
    finally:
        for connection in (holder, bystander, waiter, advisory_waiter):
            await connection.close()
        await db.execute("DROP TABLE IF EXISTS lock_probe")


# ------------------------------------------------------------------------------ Twilio token rotation


async def _signed_status(client: AsyncTestClient[Any], token: str) -> int:
    path = "/webhooks/twilio/voice"
    params = {"CallSid": "CA" + "9" * 32, "From": CALLER, "To": "+15550009999", "CallStatus": "ringing"}
    signature = RequestValidator(token).compute_signature(f"{TEST_ENVIRONMENT['PUBLIC_BASE_URL']}{path}", params)
    response = await client.post(path, data=params, headers={"X-Twilio-Signature": signature})
    return response.status_code


async def test_twilio_signatures_from_the_previous_token_pass_during_a_rotation(
    db: asyncpg.Connection, settings_env: Any
) -> None:
    from nmc.app import create_app

    current = TEST_ENVIRONMENT["TWILIO_AUTH_TOKEN"]
    async with AsyncTestClient(app=create_app()) as client:
        assert await _signed_status(client, "old-token") == 403  # no rotation under way
        settings_env(TWILIO_AUTH_TOKEN_PREVIOUS="old-token")
        assert await _signed_status(client, "old-token") != 403
        assert await _signed_status(client, current) != 403
        assert await _signed_status(client, "someone-elses-token") == 403


# ------------------------------------------------------------------------------ SECRET_KEY rotation (runbook §8.2)


async def test_calendars_rotate_tokens_reencrypts_every_token_under_the_new_key_and_names_unreadable_ones(
    db: asyncpg.Connection, make_tenant: Any, settings_env: Any
) -> None:
    """docs/oncall.md "Secret rotation" → `SECRET_KEY`: with SECRET_KEY_PREVIOUS = the old key,
    `just calendars-rotate-tokens` re-encrypts the stored tokens; afterwards the new key alone reads them."""
    from nmc.calendars import keys

    old, new = "old-secret-key-for-the-rotation-test", "new-secret-key-for-the-rotation-test"
    settings_env(SECRET_KEY=old, SECRET_KEY_PREVIOUS="")
    refresh, access = keys.encrypt("1//refresh-token"), keys.encrypt("ya29.access-token")
    settings_env(SECRET_KEY="a-key-nobody-has-any-more-000000000")
    lost = keys.encrypt("1//sealed-under-a-lost-key")
    tenant = await make_tenant()
    connections = []
    for name, sealed_refresh, sealed_access in (("Sam", refresh, access), ("Kim", lost, None)):
        resource = await db.fetchval(
            "INSERT INTO sched_resources (id, tenant_id, name, kind, active, weekly_hours, created_at, updated_at) "
            "VALUES (gen_random_uuid(), $1::uuid, $2, 'technician', true, '{}'::jsonb, now(), now()) RETURNING id",
            tenant.id,
            name,
        )
        connections.append(
            await db.fetchval(
                "INSERT INTO calendar_connections (id, tenant_id, resource_id, provider, calendar_id, "
                "refresh_token_encrypted, access_token_encrypted) "
                "VALUES (gen_random_uuid(), $1::uuid, $2, 'google', 'primary', $3, $4) RETURNING id",
                tenant.id,
                resource,
                sealed_refresh,
                sealed_access,
            )
        )

    env = {"SECRET_KEY": new, "SECRET_KEY_PREVIOUS": old}
    result = await asyncio.to_thread(run_cli, "calendars", "rotate-tokens", env=env, check=False)
    assert result.returncode == 1, result.stdout + result.stderr  # one token could not be read: say so
    assert "tokens re-encrypted: 1; unreadable (reconnect those): 1" in result.stdout

    settings_env(SECRET_KEY=new, SECRET_KEY_PREVIOUS="")  # the old key removed: the new one alone reads them
    row = await db.fetchrow(
        "SELECT refresh_token_encrypted, access_token_encrypted FROM calendar_connections WHERE id = $1", connections[0]
    )
    assert row["refresh_token_encrypted"] != refresh
    assert keys.decrypt(row["refresh_token_encrypted"]) == "1//refresh-token"
    assert keys.decrypt(row["access_token_encrypted"]) == "ya29.access-token"
    untouched = "SELECT refresh_token_encrypted FROM calendar_connections WHERE id = $1"
    assert await db.fetchval(untouched, connections[1]) == lost  # left as it was: that connection needs a reconnect

"""The `nmc` command as an operator runs it (a real process against the real test database).

Independent invocations run concurrently: each process spends most of its time importing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import asyncpg

from tests.conftest import run_nmc

CREATE = (
    "tenants",
    "create",
    "--name",
    "Ace HVAC",
    "--number",
    "+15550101234",
    "--forward-to",
    "+15550109999",
    "--timezone",
    "America/Chicago",
    "--clerk-org",
    "org_ace",
)


async def nmc(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_nmc, *args, check=False)


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


async def test_tenants_create_prints_the_tenant_and_list_shows_it(db: asyncpg.Connection) -> None:
    created = await nmc(*CREATE)
    assert created.returncode == 0, created.stderr
    tenant = json.loads(created.stdout)
    assert tenant["name"] == "Ace HVAC"
    assert tenant["timezone"] == "America/Chicago"
    assert tenant["clerk_org_id"] == "org_ace"
    assert tenant["status"] == "active"
    assert tenant["phone_numbers"] == [{"twilio_number": "+15550101234", "forwarding_number": "+15550109999"}]

    row = await db.fetchrow("SELECT id::text, name, timezone, clerk_org_id FROM tenants")
    assert dict(row) == {
        "id": tenant["id"],
        "name": "Ace HVAC",
        "timezone": "America/Chicago",
        "clerk_org_id": "org_ace",
    }
    event = await db.fetchrow("SELECT event_name, tenant_id::text, correlation_id FROM outbox_events")
    assert event["event_name"] == "tenant.created"
    assert event["tenant_id"] == tenant["id"]
    assert event["correlation_id"]

    duplicate_number, listed = await asyncio.gather(
        nmc(*CREATE[:-1], "org_other"),
        nmc("tenants", "list"),
    )
    assert_clean_failure(duplicate_number, "+15550101234")
    assert await db.fetchval("SELECT count(*) FROM tenants") == 1
    assert await db.fetchval("SELECT count(*) FROM tenant_phone_numbers") == 1

    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines()]
    assert lines == [tenant]


async def test_tenants_create_refuses_bad_input_naming_the_option(db: asyncpg.Connection) -> None:
    bad_number, bad_forward, bad_zone, missing = await asyncio.gather(
        nmc("tenants", "create", "--name", "X", "--number", "5551234", "--forward-to", "+15550109999"),
        nmc("tenants", "create", "--name", "X", "--number", "+15550101234", "--forward-to", "call me"),
        nmc(*CREATE[:8], "--timezone", "Mars/Olympus"),
        nmc("tenants", "create", "--name", "X", "--forward-to", "+15550109999"),
    )
    assert_clean_failure(bad_number, "--number")
    assert "twilio_number" not in bad_number.stderr
    assert_clean_failure(bad_forward, "--forward-to")
    assert_clean_failure(bad_zone, "timezone", "Mars/Olympus")
    assert_clean_failure(missing, "--number")
    assert await db.fetchval("SELECT count(*) FROM tenants") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox_events") == 0


async def test_sql_runs_named_ops_queries_and_refuses_unknown_ones(db: asyncpg.Connection) -> None:
    for minutes in (3, 1):
        await db.execute(
            "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id, created_at) "
            "VALUES (gen_random_uuid(), 'tenant.created', 1, '{}'::jsonb, 'c', now() - $1 * interval '1 minute')",
            minutes,
        )
    lag, unknown, escape = await asyncio.gather(nmc("sql", "outbox_lag"), nmc("sql", "nope"), nmc("sql", "../alembic"))

    assert lag.returncode == 0, lag.stderr
    [row] = json.loads(lag.stdout)
    assert row["pending"] == 2
    assert row["oldest"].startswith("0:03:")

    assert_clean_failure(unknown, "no query 'nope'", "outbox_lag", "outbox_stuck", "webhook_volume")
    assert_clean_failure(escape, "no query")

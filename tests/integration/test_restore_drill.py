"""The restore drill (issue #13, runbook §8, §9) against the test database: restored into a scratch
database, migrated, smoke-tested with a real web + worker (console SMS backend), the newest event
reported, and the scratch database dropped afterwards."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import SERVER_URL, TEST_DATABASE_URL, run_nmc


async def _scratch_databases() -> list[str]:
    connection = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'nmc_restore_drill_%'")
        return [row["datname"] for row in rows]
    finally:
        await connection.close()


async def _plant_event(db: asyncpg.Connection) -> datetime:
    at = datetime.now(UTC) - timedelta(minutes=7)
    await db.execute(
        "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id, created_at, available_at, "
        "dispatched_at) VALUES (gen_random_uuid(), 'tenant.created', 1, '{}'::jsonb, 'drill', $1, $1, $1)",
        at,
    )
    return at


def _drill(source: str) -> subprocess.CompletedProcess[str]:
    return run_nmc("restore-drill", source, env={"DATABASE_URL": TEST_DATABASE_URL}, check=False)


@pytest.mark.timeout(300)
async def test_restore_drill_from_a_database_url(db: asyncpg.Connection) -> None:
    planted = await _plant_event(db)
    before = await _scratch_databases()
    result = await asyncio.to_thread(_drill, TEST_DATABASE_URL)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "restore: " in out and "migrations: " in out
    assert f"newest event in the restore: {planted.isoformat()}" in out
    assert "minutes before now" in out
    assert "smoke: first SMS sent in" in out
    assert "dropped the scratch database nmc_restore_drill_" in out
    assert await _scratch_databases() == before
    # the source is untouched: no drill tenant in it
    assert await db.fetchval("SELECT count(*) FROM tenants WHERE name = 'Restore drill'") == 0


@pytest.mark.timeout(300)
async def test_restore_drill_from_a_plain_sql_dump(db: asyncpg.Connection, tmp_path: Path) -> None:
    await _plant_event(db)
    dump = tmp_path / "snapshot.sql"
    subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "-f", str(dump), TEST_DATABASE_URL], check=True)
    result = await asyncio.to_thread(_drill, str(dump))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: first SMS sent in" in result.stdout
    assert await _scratch_databases() == []


async def test_a_failed_restore_still_drops_the_scratch_database(db: asyncpg.Connection, tmp_path: Path) -> None:
    broken = tmp_path / "broken.sql"
    broken.write_text("CREATE TABLE x (;\n")
    result = await asyncio.to_thread(_drill, str(broken))
    assert result.returncode != 0 and "restore drill failed" in result.stderr
    assert "dropped the scratch database" in result.stdout
    assert await _scratch_databases() == []

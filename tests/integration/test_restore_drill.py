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
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nmc.restore_drill import DrillReport, newest_event, record_success, restore
from tests.conftest import SERVER_URL, TEST_DATABASE_URL, run_nmc
from tests.integration.test_observability import sample_value


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
    # the success is recorded in DATABASE_URL's database (here also the source), not in the dropped scratch one
    [drill] = await db.fetch("SELECT * FROM obs_restore_drills")
    assert drill["newest_event_at"] == planted
    assert drill["source"] == TEST_DATABASE_URL  # a URL without credentials stays as it was
    assert 0 < drill["restore_seconds"] < drill["total_seconds"]
    assert abs((datetime.now(UTC) - drill["finished_at"]).total_seconds()) < 60
    assert f"recorded in {TEST_DATABASE_URL} at " in out


async def test_a_recorded_drill_is_exported_at_metrics_and_absent_before(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    never = (await client.get("/metrics")).text
    assert "# TYPE restore_drill_last_success_timestamp_seconds gauge" in never
    assert sample_value(never, "restore_drill_last_success_timestamp_seconds") is None  # absent, never 0
    report = DrillReport(scratch="x", steps=[("restore", 4.5), ("migrations", 1.0), ("smoke test", 9.0)])
    await record_success(TEST_DATABASE_URL, report, "postgresql://ops:secret@db.example:5432/nmc?ssl=1")
    await db.execute("UPDATE obs_restore_drills SET finished_at = finished_at - interval '40 days'")
    report.steps[0] = ("restore", 3.0)
    newest = await record_success(TEST_DATABASE_URL, report, "/backups/nmc.dump")
    text = (await client.get("/metrics")).text
    exported = sample_value(text, "restore_drill_last_success_timestamp_seconds")
    assert exported == pytest.approx(newest.timestamp(), abs=0.001)  # the newest drill, not the first row
    oldest = await db.fetchval("SELECT min(finished_at) FROM obs_restore_drills")
    assert newest.timestamp() - oldest.timestamp() > 39 * 86400
    assert sample_value(text, "restore_drill_last_restore_seconds") == 3.0
    sources = [r["source"] for r in await db.fetch("SELECT source FROM obs_restore_drills ORDER BY finished_at")]
    assert sources == ["postgresql://db.example:5432/nmc", "/backups/nmc.dump"]  # never the password


async def test_a_plain_sql_dump_is_restored_with_psql(db: asyncpg.Connection, tmp_path: Path) -> None:
    """The restore step alone: the migrations and the smoke test after it are the drill's whole run
    above, the same whatever the dump's format."""
    planted = await _plant_event(db)
    dump = tmp_path / "snapshot.sql"
    subprocess.run(["pg_dump", "--no-owner", "--no-privileges", "-f", str(dump), TEST_DATABASE_URL], check=True)
    scratch = "nmc_restore_drill_plain_sql"
    admin = await asyncpg.connect(f"{SERVER_URL}/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {scratch}")
        await admin.execute(f"CREATE DATABASE {scratch}")
        await asyncio.to_thread(restore, str(dump), f"{SERVER_URL}/{scratch}")
        assert await newest_event(f"{SERVER_URL}/{scratch}") == planted
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")
        await admin.close()


async def test_a_failed_restore_still_drops_the_scratch_database(db: asyncpg.Connection, tmp_path: Path) -> None:
    broken = tmp_path / "broken.sql"
    broken.write_text("CREATE TABLE x (;\n")
    result = await asyncio.to_thread(_drill, str(broken))
    assert result.returncode != 0 and "restore drill failed" in result.stderr
    assert "dropped the scratch database" in result.stdout
    assert await _scratch_databases() == []
    assert await db.fetchval("SELECT count(*) FROM obs_restore_drills") == 0  # a failed drill is no success
    assert "recorded in" not in result.stdout

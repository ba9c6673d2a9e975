"""The real worker process (`python -m nmc worker`) against the real test database.

NOTIFY wake-up: the worker's polling fallback is set to 60 s, so an event dispatched within a few
seconds was woken by LISTEN/NOTIFY. Reconnection: every Postgres connection of the worker is killed
(what a Postgres restart or failover does; PgQueuer's driver does not reconnect by itself, #224).
`tenant.created` has no subscriber today; the dispatcher marks it dispatched all the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import msgspec
import pytest

from nmc.db import raw_connection, session_scope
from nmc.events.catalog import TenantCreated, validated
from nmc.events.outbox import enqueue_dispatch
from nmc.worker import RETENTION_SCHEDULE
from tests.conftest import PROJECT_ROOT

POLL_FALLBACK_SECONDS = "60"
WAKE_DEADLINE_SECONDS = 10.0  # far below the polling fallback
RECONNECT_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0


class Worker:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        env = {**os.environ, "WORKER_POLL_SECONDS": POLL_FALLBACK_SECONDS, "LOG_LEVEL": "INFO"}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "nmc", "worker"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    async def wait_for_output(self, needle: str, count: int = 1, timeout: float = 30) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.output().count(needle) >= count:
                return
            if self.popen.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"worker never printed {needle!r} x{count}:\n{self.output()[-3000:]}")

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                self._log.close()
                return None
        self._log.close()
        return self.popen.returncode


@pytest.fixture
async def worker(db: asyncpg.Connection, tmp_path: Path) -> AsyncIterator[Worker]:
    process = Worker(tmp_path / "worker.log")
    try:
        await process.wait_for_output('"worker.consumer_started"')  # OUTBOX_CONCURRENCY consumers (1)
        yield process
    finally:
        process.stop()


async def publish_tenant_created() -> UUID:
    """The outbox row and dispatch job `publish` writes for a subscribed event (`tenant.created` has no
    subscriber, so `publish` itself would record it as dispatched at once)."""
    event = TenantCreated(tenant_id=uuid4(), business_name="Worker Test Co", correlation_id=f"w-{uuid4().hex[:8]}")
    async with session_scope() as session:
        connection = await raw_connection(session)
        await connection.execute(
            "INSERT INTO outbox_events (id, event_name, event_version, tenant_id, payload, correlation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            event.event_id, event.name, event.version, event.tenant_id,
            msgspec.json.encode(validated(event)).decode(), event.correlation_id,
        )  # fmt: skip
        await enqueue_dispatch(connection, event.event_id)
    return event.event_id


async def wait_dispatched(db: asyncpg.Connection, event_id: UUID, timeout: float, worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await db.fetchval("SELECT dispatched_at IS NOT NULL FROM outbox_events WHERE id = $1", event_id):
            return
        await asyncio.sleep(0.1)
    row = await db.fetchrow("SELECT attempts, last_error FROM outbox_events WHERE id = $1", event_id)
    raise AssertionError(
        f"{event_id} not dispatched within {timeout} s (row: {dict(row) if row else None}):\n{worker.output()[-3000:]}"
    )


async def job_gone(db: asyncpg.Connection, event_id: UUID) -> bool:
    return not await db.fetchval("SELECT count(*) FROM pgqueuer WHERE dedupe_key = $1", f"outbox:{event_id}")


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, message: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(message)


async def test_worker_dispatches_on_notify_reconnects_and_stops_cleanly(db: asyncpg.Connection, worker: Worker) -> None:
    # Consumer 0 also runs the cron schedules: nightly retention is registered in Postgres.
    await wait_until(
        lambda: db.fetchval(
            "SELECT count(*) > 0 FROM pgqueuer_schedules WHERE entrypoint = 'retention' AND expression = $1",
            RETENTION_SCHEDULE,
        ),
        WAKE_DEADLINE_SECONDS,
        "the retention schedule was not registered",
    )

    first = await publish_tenant_created()
    await wait_dispatched(db, first, WAKE_DEADLINE_SECONDS, worker)
    # The job is consumed (completed and removed from the queue), not left behind for a second run.
    await wait_until(lambda: job_gone(db, first), WAKE_DEADLINE_SECONDS, f"job outbox:{first} still queued")

    second = await publish_tenant_created()  # the worker is idle in its 60 s wait: only NOTIFY wakes it
    await wait_dispatched(db, second, WAKE_DEADLINE_SECONDS, worker)

    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert killed >= 2, "the worker's consumer connections were not found"
    await worker.wait_for_output('"worker.consumer_restarting"', timeout=RECONNECT_DEADLINE_SECONDS)

    third = await publish_tenant_created()
    await wait_dispatched(db, third, RECONNECT_DEADLINE_SECONDS, worker)
    assert worker.popen.poll() is None, "the worker died instead of reconnecting"
    attempts = await db.fetchval("SELECT attempts FROM outbox_events WHERE id = $1", third)
    assert attempts == 1

    assert worker.stop() == 0, f"worker did not exit 0 within {STOP_DEADLINE_SECONDS} s:\n{worker.output()[-3000:]}"
    lines = worker.output().splitlines()
    # Structured logs only (runbook §5): an unhandled crash would print a bare traceback.
    not_json = [line for line in lines if not line.startswith("{")]
    assert not_json == [], not_json[:20]
    assert json.loads(lines[-1])["event"] == "worker.stopped"

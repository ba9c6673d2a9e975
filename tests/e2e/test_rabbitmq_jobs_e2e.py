"""The jobs process on RabbitMQ (`DRAMATIQ_BROKER_URL=amqp://…`, issue #16, ADR 0018): the real web, worker
and jobs processes, unchanged, with every sender on the same broker. A calendar connect (the web queues
the first sync; the jobs process runs it against the fake Google) and retention (queued by the worker's
own schedule handler) go through RabbitMQ, and nothing through Postgres' `dramatiq.queue`.

Each run gets a RabbitMQ virtual host of its own (`rabbitmqctl add_vhost`), so no other run's messages
are seen and none are left behind.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.chaos.environment import reap
from tests.conftest import PROJECT_ROOT, TEST_DATABASE, TEST_DATABASE_URL
from tests.e2e.conftest import wait_for
from tests.e2e.test_booking_by_sms_e2e import bookable_shop
from tests.e2e.test_calendars_e2e import connect
from tests.fakes.clerk import FakeClerk
from tests.fakes.google import FakeGoogle
from tests.processes import Process, Stack, free_port

pytestmark = pytest.mark.e2e
RABBITMQ = ("127.0.0.1", 5672)


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    try:
        socket.create_connection(RABBITMQ, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"RabbitMQ is not reachable on {RABBITMQ[0]}:{RABBITMQ[1]} ({exc}): start it to run this test")
    if shutil.which("rabbitmqctl") is None:
        yield "amqp://guest:guest@127.0.0.1:5672/%2F"  # the default virtual host
        return
    vhost = TEST_DATABASE
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(
    migrated_database: str,
    fake_twilio_server: Any,
    google: FakeGoogle,
    broker_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    port = free_port()
    env = {
        **os.environ,
        **google.settings,
        "ENVIRONMENT": "development",
        "DATABASE_URL": TEST_DATABASE_URL,
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_API_BASE_URL": fake_twilio_server.base_url,
        "LOG_LEVEL": "INFO",
        "DRAMATIQ_BROKER_URL": broker_url,
    }
    log_dir = tmp_path_factory.mktemp("e2e-rabbitmq-logs")
    running = Stack(env, log_dir)
    jobs = Process("jobs", env, log_dir)
    running.jobs = jobs  # type: ignore[attr-defined]
    try:
        jobs.wait_for_output("Worker process is ready for action", timeout=90)
        yield running
    finally:
        for process in (jobs, running.worker, running.web):
            process.stop()
            reap(process)


async def on_rabbitmq_only(db: asyncpg.Connection, broker_url: str, queue: str) -> None:
    """Nothing went through Postgres' broker; RabbitMQ's virtual host has the queue."""
    assert await db.fetchval("SELECT count(*) FROM dramatiq.queue") == 0
    if shutil.which("rabbitmqctl"):
        vhost = broker_url.rsplit("/", 1)[1]
        queues = rabbitmqctl("list_queues", "-p", vhost, "--quiet", "name").split()
        assert queue in queues, queues


async def test_a_calendar_sync_runs_through_rabbitmq(
    stack: Stack, db: asyncpg.Connection, google: FakeGoogle, clerk: FakeClerk, broker_url: str
) -> None:
    shop = await bookable_shop(stack, clerk)
    connection = await connect(shop, db)  # the web queued the first sync; the jobs process ran it
    assert connection["status"] == "active" and connection["last_synced_at"] is not None
    await on_rabbitmq_only(db, broker_url, "calendars")


async def test_retention_runs_through_rabbitmq(stack: Stack, db: asyncpg.Connection, broker_url: str) -> None:
    await db.execute(
        "INSERT INTO webhook_events (id, provider, external_id, kind, received_at, payload)"
        " VALUES (gen_random_uuid(), 'twilio', 'CAold', 'voice.dial_status', now() - interval '91 days', '{}')"
    )
    # The worker's own schedule handler, as at 03:15, in a process of its own with the same settings.
    queued = subprocess.run(
        [sys.executable, "-c", "import asyncio\nfrom nmc.worker import on_retention\nasyncio.run(on_retention(None))"],
        cwd=PROJECT_ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert queued.returncode == 0, queued.stderr[-2000:]

    async def purged() -> bool:
        ran = await db.fetchval("SELECT count(*) FROM obs_maintenance_runs WHERE task = 'retention'")
        left = await db.fetchval("SELECT count(*) FROM webhook_events WHERE external_id = 'CAold'")
        return bool(ran) and left == 0

    await wait_for(purged, timeout=30)
    await on_rabbitmq_only(db, broker_url, "maintenance")

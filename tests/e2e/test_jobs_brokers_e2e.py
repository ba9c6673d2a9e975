"""The jobs process on RabbitMQ (`DRAMATIQ_BROKER_URL=amqp://…`) and on Redis (`redis://…`), issue #16,
ADR 0018: the real web, worker and jobs processes, unchanged, with every sender on the same broker. A
calendar connect (the web queues the first sync; the jobs process runs it against the fake Google) and
retention (queued by the worker's own schedule handler) go through that broker, and nothing through
Postgres' `dramatiq.queue`.

Each RabbitMQ run gets a virtual host of its own (`rabbitmqctl add_vhost`), each Redis run an emptied
database of its own (db 13), so no other run's messages are seen and none are left behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from tests.conftest import PROJECT_ROOT, TEST_DATABASE
from tests.e2e.conftest import stack_env, wait_for
from tests.e2e.test_booking_by_sms_e2e import bookable_shop
from tests.e2e.test_calendars_e2e import connect
from tests.fakes.clerk import FakeClerk
from tests.fakes.google import FakeGoogle
from tests.processes import Process, Stack, reap

pytestmark = pytest.mark.e2e
RABBITMQ = ("127.0.0.1", 5672)
REDIS = ("127.0.0.1", 6379)
REDIS_DB = 13


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def reachable_or_skip(name: str, address: tuple[str, int]) -> None:
    try:
        socket.create_connection(address, timeout=2).close()
    except OSError as exc:
        pytest.skip(f"{name} is not reachable on {address[0]}:{address[1]} ({exc}): start it to run this test")


@pytest.fixture(scope="module", params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis":
        yield from redis_database()
        return
    reachable_or_skip("RabbitMQ", RABBITMQ)
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


def redis_database() -> Iterator[str]:
    import redis

    reachable_or_skip("Redis", REDIS)
    url = f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


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
    env = stack_env(fake_twilio_server.base_url, **google.settings, DRAMATIQ_BROKER_URL=broker_url)
    log_dir = tmp_path_factory.mktemp("e2e-broker-logs")
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


async def on_that_broker_only(db: asyncpg.Connection, broker_url: str, queue: str) -> None:
    """Nothing went through Postgres' broker; RabbitMQ's virtual host has the queue, Redis our consumers."""
    assert await db.fetchval("SELECT count(*) FROM dramatiq.queue") == 0
    if broker_url.startswith("redis"):
        import redis

        with redis.Redis.from_url(broker_url) as client:
            assert client.keys("dramatiq:*"), "the jobs process left no trace on Redis"
    elif shutil.which("rabbitmqctl"):
        vhost = broker_url.rsplit("/", 1)[1]
        queues = rabbitmqctl("list_queues", "-p", vhost, "--quiet", "name").split()
        assert queue in queues, queues


async def test_a_calendar_sync_runs_through_the_broker(
    stack: Stack, db: asyncpg.Connection, google: FakeGoogle, clerk: FakeClerk, broker_url: str
) -> None:
    shop = await bookable_shop(stack, clerk)
    connection = await connect(shop, db)  # the web queued the first sync; the jobs process ran it
    assert connection["status"] == "active" and connection["last_synced_at"] is not None
    await on_that_broker_only(db, broker_url, "calendars")


async def test_retention_runs_through_the_broker(stack: Stack, db: asyncpg.Connection, broker_url: str) -> None:
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
    await on_that_broker_only(db, broker_url, "maintenance")

"""The worker's PgQueuer consumer asks one question between dequeues, not three (ADR 0020), and still
waits as PgQueuer would: a due job re-polls at once, a deferred one wakes it when due."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta

import asyncpg
from pgqueuer.core.qm import QueueManager
from pgqueuer.models import Job

from nmc.queue.pgq import OUTBOX_DISPATCH, LeanQueueManager, consumer_on, enqueue

TIMEOUT = timedelta(seconds=30)


def test_the_overridden_method_is_pgqueuers_own() -> None:
    """An upgrade that renames or reshapes it must fail here, not silently fall back to three probes."""
    upstream = QueueManager._effective_dequeue_timeout
    assert inspect.iscoroutinefunction(upstream)
    assert list(inspect.signature(upstream).parameters) == ["self", "dequeue_timeout"]
    assert LeanQueueManager._effective_dequeue_timeout is not upstream


async def ignore(job: Job) -> None:
    pass


async def wait_after_dequeue(connection: asyncpg.Connection) -> timedelta:
    consumer = consumer_on(connection)
    consumer.entrypoint(OUTBOX_DISPATCH)(ignore)
    assert isinstance(consumer.qm, LeanQueueManager)
    return await consumer.qm._effective_dequeue_timeout(TIMEOUT)


async def test_nothing_queued_waits_for_a_notify_or_the_timeout(db: asyncpg.Connection) -> None:
    assert await wait_after_dequeue(db) == TIMEOUT


async def test_a_due_job_is_polled_for_at_once(db: asyncpg.Connection) -> None:
    await enqueue(db, OUTBOX_DISPATCH, b"due")
    assert await wait_after_dequeue(db) == timedelta(seconds=0.1)


async def test_a_deferred_job_wakes_the_consumer_when_it_is_due(db: asyncpg.Connection) -> None:
    await enqueue(db, OUTBOX_DISPATCH, b"later", execute_after=timedelta(seconds=5))
    assert timedelta(seconds=4) < await wait_after_dequeue(db) <= timedelta(seconds=5)


async def test_a_job_of_another_entrypoint_is_not_waited_for(db: asyncpg.Connection) -> None:
    await enqueue(db, "someone.else", b"due")
    assert await wait_after_dequeue(db) == TIMEOUT


async def test_a_running_consumer_takes_a_deferred_job_when_due(migrated_database: str) -> None:
    """No NOTIFY comes when a deferred job falls due: only the probe's eta wakes the consumer."""
    listening = await asyncpg.connect(migrated_database)
    arranging = await asyncpg.connect(migrated_database)
    taken: asyncio.Future[float] = asyncio.get_running_loop().create_future()
    consumer = consumer_on(listening)

    async def take(job: Job) -> None:
        if not taken.done():
            taken.set_result(asyncio.get_running_loop().time())

    consumer.entrypoint(OUTBOX_DISPATCH)(take)
    run = asyncio.create_task(consumer.run(dequeue_timeout=TIMEOUT, batch_size=10))
    try:
        await asyncio.sleep(0.3)  # listening, nothing queued: waiting for up to 30 s
        enqueued_at = asyncio.get_running_loop().time()
        await enqueue(arranging, OUTBOX_DISPATCH, b"deferred", execute_after=timedelta(seconds=1))
        taken_at = await asyncio.wait_for(taken, 10)
        assert 0.9 < taken_at - enqueued_at < 3
    finally:
        consumer.shutdown.set()
        await asyncio.wait_for(run, 10)
        await listening.close()
        await arranging.close()

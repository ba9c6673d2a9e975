"""The worker's PgQueuer consumer makes two round trips per wake-up, not five (ADR 0020): no empty
dequeue after a short batch, one probe instead of three. It still waits as PgQueuer would: a due job
re-polls at once, a deferred one wakes it when due, a full batch is followed by another dequeue."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import timedelta

import asyncpg
from pgqueuer.core.qm import QueueManager
from pgqueuer.models import Job

from nmc.queue.pgq import OUTBOX_DISPATCH, LeanQueueManager, consumer_on, enqueue

TIMEOUT = timedelta(seconds=30)


def test_the_overridden_methods_are_pgqueuers_own() -> None:
    """An upgrade that renames or reshapes them must fail here, not silently fall back to five round trips."""
    probe = QueueManager._effective_dequeue_timeout
    assert inspect.iscoroutinefunction(probe)
    assert list(inspect.signature(probe).parameters) == ["self", "dequeue_timeout"]
    assert LeanQueueManager._effective_dequeue_timeout is not probe
    fetch = QueueManager.fetch_jobs
    assert inspect.isasyncgenfunction(fetch)
    assert list(inspect.signature(fetch).parameters) == [
        "self", "batch_size", "global_concurrency_limit", "heartbeat_timeout"
    ]  # fmt: skip
    assert LeanQueueManager.fetch_jobs is not fetch


async def ignore(job: Job) -> None:
    pass


async def wait_after_dequeue(connection: asyncpg.Connection, *, took_work: bool = False) -> timedelta:
    consumer = consumer_on(connection)
    consumer.entrypoint(OUTBOX_DISPATCH)(ignore)
    assert isinstance(consumer.qm, LeanQueueManager)
    consumer.qm.took_work = took_work
    return await consumer.qm._effective_dequeue_timeout(TIMEOUT)


async def test_nothing_queued_waits_for_a_notify_or_the_timeout(db: asyncpg.Connection) -> None:
    assert await wait_after_dequeue(db) == TIMEOUT


async def test_a_due_job_is_polled_for_at_once(db: asyncpg.Connection) -> None:
    await enqueue(db, OUTBOX_DISPATCH, b"due")
    assert await wait_after_dequeue(db) == timedelta(seconds=0.1)


async def test_a_job_due_after_a_dequeue_that_found_work_is_dequeued_without_waiting(db: asyncpg.Connection) -> None:
    """It committed while the last dequeue ran (its NOTIFY drained with that dequeue's jobs)."""
    await enqueue(db, OUTBOX_DISPATCH, b"arrived meanwhile")
    assert await wait_after_dequeue(db, took_work=True) == timedelta(0)


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


async def test_a_short_batch_is_the_last_dequeue_and_a_full_one_is_not(
    migrated_database: str, db: asyncpg.Connection
) -> None:
    """One job: one dequeue (PgQueuer makes a second, empty one). Five jobs in batches of two: three
    dequeues, every job taken in the one wake-up."""
    listening = await asyncpg.connect(migrated_database)
    arranging = await asyncpg.connect(migrated_database)
    consumer = consumer_on(listening)
    taken: list[bytes] = []
    dequeues: list[int] = []
    original = consumer.qm.queries.dequeue

    async def counted(**kwargs: object) -> list[Job]:
        jobs = await original(**kwargs)  # type: ignore[arg-type]
        dequeues.append(len(jobs))
        return jobs

    async def take(job: Job) -> None:
        assert job.payload is not None
        taken.append(job.payload)

    consumer.qm.queries.dequeue = counted  # type: ignore[method-assign]
    consumer.entrypoint(OUTBOX_DISPATCH)(take)
    run = asyncio.create_task(consumer.run(dequeue_timeout=TIMEOUT, batch_size=2))
    try:
        await asyncio.sleep(0.3)  # the start's own dequeue, empty, then a NOTIFY wait of up to 30 s
        dequeues.clear()
        await enqueue(arranging, OUTBOX_DISPATCH, b"one")
        await _until(lambda: taken == [b"one"])
        await asyncio.sleep(0.3)
        assert dequeues == [1]
        dequeues.clear()
        async with arranging.transaction():  # one commit: one wake-up for all five
            for index in range(5):
                await enqueue(arranging, OUTBOX_DISPATCH, f"batch {index}".encode())
        await _until(lambda: len(taken) == 6)
        await asyncio.sleep(0.3)
        assert dequeues[:3] == [2, 2, 1]
        assert sum(dequeues) == 5
    finally:
        consumer.shutdown.set()
        await asyncio.wait_for(run, 10)
        await listening.close()
        await arranging.close()


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)

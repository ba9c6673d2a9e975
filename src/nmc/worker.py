"""The worker process (a composition root): PgQueuer consumers for the outbox dispatcher, the sweeper,
cron schedules, and every module's event subscribers.

`OUTBOX_CONCURRENCY` consumers each hold one LISTEN connection and run up to `2 * OUTBOX_BATCH_SIZE`
dispatches at once (PgQueuer's own floor), so a burst of missed calls never queues behind one slow
Twilio request. PgQueuer's asyncpg driver does not reconnect after a Postgres restart (upstream
#224): each consumer watches its connection and is rebuilt when it drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import socket
from datetime import timedelta
from functools import cache
from uuid import UUID, uuid4

import asyncpg
import structlog
from pgqueuer import PgQueuer
from pgqueuer.models import Job, Schedule
from pgqueuer.types import Channel

from nmc.calendars import live_calendar_check, queue_poll_tick
from nmc.conversations import queue_due_follow_ups
from nmc.db import dispose_engine
from nmc.events import dispatch, registry_complete, release_deferred, set_dispatcher_id, sweep
from nmc.messaging import PAUSED_REASON
from nmc.observability.correlation import use_correlation_id
from nmc.observability.flusher import start_flusher, stop_flusher
from nmc.observability.logging import clear_context, configure_logging
from nmc.queue.pgq import OUTBOX_DISPATCH, consumer_on
from nmc.runtime import freeze_startup_heap
from nmc.scheduling import collect_expired_holds, register_live_busy_check
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="worker")

# Each module's subscribers, in the order they run for one event: the KPI projection first (cheap,
# and current even while a text waits), then conversations, then booking by SMS.
SUBSCRIBER_MODULES = (
    "nmc.kpis.handlers",
    "nmc.conversations.handlers",
    "nmc.booking_by_sms.handlers",
    "nmc.calendars.handlers",
    "nmc.billing.handlers",
    "nmc.telephony.handlers",
)

SWEEP_EVERY_SECONDS = 2.0  # with HEARTBEAT_STALE_SECONDS: a dead worker's texts go out within ~8 s
HEARTBEAT_SECONDS = 1.0
PGQUEUER_HEARTBEAT_SECONDS = 5.0
RECONNECT_BACKOFF_SECONDS = (0.5, 1, 2, 5)
RETENTION_SCHEDULE = "15 3 * * *"
HOLD_GC_SCHEDULE = "* * * * *"  # runbook §1: expired holds are deleted every minute
BILLING_SCHEDULE = "* * * * *"  # lapsed entitlements and metered usage (issue #12), in the jobs process


@cache
def load_subscribers() -> None:
    """Import every module's subscribers, then let dispatching start (once per process)."""
    for module in SUBSCRIBER_MODULES:
        importlib.import_module(module)
    registry_complete()


async def on_outbox_dispatch(job: Job) -> None:
    clear_context()  # the dispatcher binds the event's own correlation id
    assert job.payload is not None
    await dispatch(UUID(bytes=job.payload))


async def on_hold_gc(schedule: Schedule) -> None:
    """Delete expired holds and publish `hold.expired` (they already block no one; this tidies up)."""
    clear_context()
    use_correlation_id(f"hold-gc-{uuid4().hex}")
    if collected := await collect_expired_holds():
        log.info("holds.collected", count=collected)


async def on_retention(schedule: Schedule) -> None:
    """Hand the retention deletes to the jobs process (Dramatiq), away from the first-SMS path."""
    from jobs import purge_expired_rows

    await asyncio.to_thread(purge_expired_rows.send)
    log.info("retention.scheduled")


async def on_billing_tick(schedule: Schedule) -> None:
    """Hand billing's periodic work to the jobs process (Stripe calls never run beside the first SMS)."""
    from jobs import billing_tick

    await asyncio.to_thread(billing_tick.send)


def calendar_poll_schedule(settings: Settings) -> str:
    """Runbook §1: every POLL_INTERVAL_GOOGLE_SECONDS (a seconds field below a minute); the tick itself
    picks the connections not synced within their interval, so a coarser tick never polls too often."""
    seconds = settings.POLL_INTERVAL_GOOGLE_SECONDS
    return f"* * * * * */{seconds}" if seconds < 60 else "* * * * *"


async def on_calendar_poll(schedule: Schedule) -> None:
    """Hand the calendar poll tick to the jobs process: no calendar work runs in the dispatch slots."""
    await queue_poll_tick()


# PgQueuer's dequeue is a large statement that Postgres re-plans on every execution (its custom plans
# look cheaper than the generic one): 0.5 ms of planning against 0.15 ms of execution, twice per wake-up
# (pg_stat_statements, 50 missed calls/s). Its parameters never change which plan is right (a small
# table, partial indexes on constants), so the consumer's connection always uses the generic plan.
CONSUMER_SESSION = {"plan_cache_mode": "force_generic_plan"}


def build_consumer(connection: asyncpg.Connection, settings: Settings, *, with_schedules: bool) -> PgQueuer:
    channel = None if settings.WORKER_LISTEN else Channel("nmc_wakeups_disabled")
    pgq = consumer_on(connection, channel)
    pgq.entrypoint(OUTBOX_DISPATCH)(on_outbox_dispatch)
    if with_schedules:
        pgq.schedule("retention", RETENTION_SCHEDULE)(on_retention)
        pgq.schedule("hold_gc", HOLD_GC_SCHEDULE)(on_hold_gc)
        pgq.schedule("calendar_poll", calendar_poll_schedule(settings), clean_old=True)(on_calendar_poll)
        pgq.schedule("billing", BILLING_SCHEDULE)(on_billing_tick)
    return pgq


async def run_consumer(index: int, settings: Settings, stopping: asyncio.Event) -> None:
    """One PgQueuer consumer, rebuilt on a fresh connection whenever the old one is lost or fails.

    Whatever ended it is logged with its exception and retried with backoff, never in a tight loop.
    """
    failures = 0
    while not stopping.is_set():
        try:
            await _consume_until_lost(index, settings, stopping)
            failures = 0
        except Exception as exc:
            delay = RECONNECT_BACKOFF_SECONDS[min(failures, len(RECONNECT_BACKOFF_SECONDS) - 1)]
            failures += 1
            log.warning(
                "worker.consumer_restarting",
                consumer=index,
                error=f"{type(exc).__name__}: {exc}",
                failures=failures,
                retry_in=delay,
                exc_info=not isinstance(exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)


async def _consume_until_lost(index: int, settings: Settings, stopping: asyncio.Event) -> None:
    connection = await asyncpg.connect(settings.DATABASE_URL, server_settings=CONSUMER_SESSION)
    lost = asyncio.Event()
    connection.add_termination_listener(lambda _conn: lost.set())
    pgq = build_consumer(connection, settings, with_schedules=index == 0)
    run = asyncio.create_task(
        pgq.run(
            dequeue_timeout=timedelta(seconds=settings.WORKER_POLL_SECONDS),
            batch_size=settings.OUTBOX_BATCH_SIZE,
            max_concurrent_tasks=2 * settings.OUTBOX_BATCH_SIZE,
            # A job picked by a worker that died is picked again after this; the outbox row's own claim
            # (kept while its worker beats) stops a live worker's long dispatch from running twice.
            heartbeat_timeout=timedelta(seconds=PGQUEUER_HEARTBEAT_SECONDS),
        )
    )
    watchers = [asyncio.create_task(lost.wait()), asyncio.create_task(stopping.wait())]
    log.info("worker.consumer_started", consumer=index, listen=settings.WORKER_LISTEN)
    try:
        await asyncio.wait([run, *watchers], return_when=asyncio.FIRST_COMPLETED)
    finally:
        pgq.shutdown.set()
        for watcher in watchers:
            watcher.cancel()
        with contextlib.suppress(asyncio.TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(run), 10)
        if not connection.is_closed():
            await connection.close()
    if stopping.is_set():
        return
    if run.done() and not run.cancelled() and (failed := run.exception()) is not None:
        raise failed
    if lost.is_set():
        raise ConnectionError("PgQueuer connection lost")
    raise RuntimeError("PgQueuer stopped by itself")


_BEAT = """
    INSERT INTO worker_heartbeats (worker_id, process, host, pid) VALUES ($1, 'worker', $2, $3)
    ON CONFLICT (worker_id) DO UPDATE SET beat_at = now()
"""


class Heartbeat:
    """This worker's row in `worker_heartbeats`, beaten every second on a connection of its own (never
    waiting behind a busy pool: a worker that looks dead has its claims taken over)."""

    def __init__(self, worker_id: UUID, settings: Settings) -> None:
        self.worker_id = worker_id
        self._url = settings.DATABASE_URL
        self._connection: asyncpg.Connection | None = None

    async def beat(self) -> None:
        if self._connection is None or self._connection.is_closed():
            self._connection = await asyncpg.connect(self._url)
        await self._connection.execute(_BEAT, self.worker_id, socket.gethostname(), os.getpid())

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), HEARTBEAT_SECONDS)
                try:
                    await self.beat()
                except Exception as exc:  # a beat missed is logged; the worker lives on and beats again
                    log.warning("worker.heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
                    await self._drop_connection()
        finally:
            await self._stop()

    async def _drop_connection(self) -> None:
        with contextlib.suppress(Exception):
            if self._connection is not None:
                self._connection.terminate()
        self._connection = None

    async def _stop(self) -> None:
        """A clean stop: nothing of ours is left to reclaim."""
        with contextlib.suppress(Exception):
            if self._connection is not None and not self._connection.is_closed():
                await self._connection.execute("DELETE FROM worker_heartbeats WHERE worker_id = $1", self.worker_id)
                await self._connection.close()


async def run_sweeper(stopping: asyncio.Event) -> None:
    """Recover outbox rows whose job was lost or whose lease/backoff has run out; queue due follow-ups."""
    while not stopping.is_set():
        try:
            if requeued := await sweep():
                log.info("outbox.swept", requeued=requeued)
        except Exception as exc:
            log.warning("outbox.sweep_failed", error=str(exc))
        try:
            await queue_due_follow_ups()
        except Exception as exc:
            log.warning("follow_up.sweep_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SWEEP_EVERY_SECONDS)


async def run_worker() -> None:
    settings = get_settings()
    configure_logging(settings.LOG_LEVEL)
    load_subscribers()
    register_live_busy_check(live_calendar_check)  # booking by SMS asks the resource's calendar too
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if not settings.PAUSE_OUTBOUND_SMS and (released := await release_deferred(PAUSED_REASON)):
        log.info("worker.released_paused_texts", count=released)
    heartbeat = Heartbeat(uuid4(), settings)
    await heartbeat.beat()  # before the first claim: a claim of ours is never mistaken for a dead worker's
    set_dispatcher_id(heartbeat.worker_id)
    tasks = [run_consumer(i, settings, stopping) for i in range(settings.OUTBOX_CONCURRENCY)]
    tasks.append(heartbeat.run(stopping))
    start_flusher()  # its in-memory figures (booking conflicts, provider requests) reach /metrics
    freeze_startup_heap()
    log.info("worker.started", consumers=settings.OUTBOX_CONCURRENCY, batch=settings.OUTBOX_BATCH_SIZE)
    try:
        await asyncio.gather(*tasks, run_sweeper(stopping))
    finally:
        await asyncio.to_thread(stop_flusher)
        await dispose_engine()
        log.info("worker.stopped")

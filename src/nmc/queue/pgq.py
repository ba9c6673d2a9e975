"""PgQueuer: transactional enqueue on the caller's connection, entrypoint names, schema DDL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.adapters.persistence import qb
from pgqueuer.core.qm import QueueManager
from pgqueuer.types import Channel

OUTBOX_DISPATCH = "outbox.dispatch"

# Built once: the default factories read PgQueuer's settings from the environment on every call.
_ENVIRONMENT = qb.QueryBuilderEnvironment()
_QUEUE = qb.QueryQueueBuilder()
_SCHEDULER = qb.QuerySchedulerBuilder()


def queries_on(connection: asyncpg.Connection) -> Queries:
    return Queries(AsyncpgDriver(connection), qbe=_ENVIRONMENT, qbq=_QUEUE, qbs=_SCHEDULER)


async def enqueue(
    connection: asyncpg.Connection,
    entrypoint: str,
    payload: bytes,
    *,
    dedupe_key: str | None = None,
    execute_after: timedelta | None = None,
) -> None:
    """Enqueue on the caller's connection, inside its transaction (for a session's connection see
    `nmc.db.raw_connection`): a rollback removes the job with the business rows.

    A job with the same dedupe key already waiting is not an error: it will do the same work.
    """
    await queries_on(connection).enqueue(
        entrypoint, payload, execute_after=execute_after, dedupe_key=dedupe_key, on_conflict="skip"
    )


async def enqueue_many(
    connection: asyncpg.Connection, entrypoint: str, payloads: list[bytes], dedupe_keys: list[str]
) -> None:
    """`enqueue` of many jobs in one statement (PgQueuer takes lists): a sweep or a circuit that
    closes releases hundreds of texts at once."""
    if payloads:
        await queries_on(connection).enqueue(
            [entrypoint] * len(payloads), list(payloads), [0] * len(payloads),
            dedupe_key=list(dedupe_keys), on_conflict="skip",
        )  # fmt: skip


# What a consumer's wake-up asks before it waits again, in one round trip instead of PgQueuer's three
# (`eligible_queued_work`, `next_deferred_eta`, `queued_work`): is a job due now (a NOTIFY drained with
# an earlier job's, or one that missed the dequeue), and when is the next deferred one due. One
# statement sees one snapshot, so the job crossing `execute_after` between two probes, which the
# third probe exists for, cannot happen here.
_WAKE_UP_PROBE = f"""
    SELECT EXISTS (
               SELECT 1 FROM {_QUEUE.qualified.queue_table}
               WHERE entrypoint = ANY($1) AND status = 'queued' AND execute_after <= NOW()
           ) AS due,
           (SELECT execute_after - NOW() FROM {_QUEUE.qualified.queue_table}
            WHERE entrypoint = ANY($1) AND status = 'queued' AND execute_after > NOW()
            ORDER BY execute_after LIMIT 1) AS eta
"""


@dataclasses.dataclass
class LeanQueueManager(QueueManager):
    """PgQueuer's queue manager with its between-dequeues probes in one statement (ADR 0020).

    At 50 missed calls/s every job is a wake-up of its own: dequeue, empty dequeue, then three probes.
    The probes were 3 of a text's ~16 worker round trips. The decision is PgQueuer's own (re-poll soon
    when a job is due, wake for the next deferred one, else wait for a NOTIFY or the timeout);
    `tests/unit/test_pgq.py` pins the method this overrides against the installed PgQueuer.
    """

    async def _effective_dequeue_timeout(self, dequeue_timeout: timedelta) -> timedelta:
        entrypoints = list(self.entrypoint_registry.keys())
        rows = await self.queries.driver.fetch(_WAKE_UP_PROBE, entrypoints)  # type: ignore[attr-defined]
        due = bool(rows and rows[0]["due"])
        eta = rows[0]["eta"] if rows else None
        if due:
            return self.min_dequeue_poll_interval
        if isinstance(eta, timedelta) and eta < dequeue_timeout:
            return max(eta, self.min_dequeue_poll_interval)
        return dequeue_timeout


@dataclasses.dataclass
class Consumer(PgQueuer):
    """`PgQueuer` whose queue manager is the `LeanQueueManager`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.queries is not None
        self.qm = LeanQueueManager(self.queries, self.channel, resources=self.resources)
        self.qm.shutdown = self.shutdown


def consumer_on(connection: asyncpg.Connection, channel: Channel | None = None) -> Consumer:
    """A consumer on its own LISTEN connection (`channel`: PgQueuer's default unless given)."""
    driver = AsyncpgDriver(connection)
    queries = Queries(driver, qbe=_ENVIRONMENT, qbq=_QUEUE, qbs=_SCHEDULER)
    return Consumer(driver, channel=channel, queries=queries) if channel else Consumer(driver, queries=queries)


def install_sql() -> str:
    """PgQueuer's own DDL, applied by our Alembic migration."""
    return _ENVIRONMENT.build_install_query()


def autovacuum_tuning_sql() -> tuple[str, str]:
    """PgQueuer's own autovacuum settings for its tables, and their reset: the queue deletes every job
    it finishes, and the dequeue scans its partial indexes through the dead ones until a vacuum."""
    return _ENVIRONMENT.build_optimize_autovacuum_query(), _ENVIRONMENT.build_optimize_autovacuum_rollback_query()


def uninstall_sql() -> str:
    return _ENVIRONMENT.build_uninstall_query()

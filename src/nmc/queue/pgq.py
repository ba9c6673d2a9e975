"""PgQueuer: transactional enqueue on the caller's connection, entrypoint names, schema DDL."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.adapters.persistence import qb, query_helpers
from pgqueuer.core.qm import QueueManager
from pgqueuer.models import Job
from pgqueuer.ports.repository import EntrypointExecutionParameter
from pgqueuer.types import Channel
from pydantic_core import to_json

from nmc.db import CteStatement

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


# PgQueuer's enqueue statement, taken apart for `enqueue_in`: its CTEs, and the alias of its input rows.
_ENQUEUE_SKIPPING = _QUEUE.build_enqueue_query("skip")
_ENQUEUE_RESULT = "SELECT i.ord AS ord, ins.id AS id"
_ENQUEUE_INPUT_ROWS = "t(priority, entrypoint, payload, execute_after, dedupe_key, headers, ord)"


def _enqueue_ctes() -> str:
    """PgQueuer's enqueue without its `WITH` and its final SELECT: `input`, `inserted`, `logged`."""
    head, found, _ = _ENQUEUE_SKIPPING.rpartition(_ENQUEUE_RESULT)
    ctes = head.strip().removeprefix("WITH ")
    if not found or not ctes.startswith("input AS MATERIALIZED (") or _ENQUEUE_INPUT_ROWS not in ctes:
        raise RuntimeError("PgQueuer's enqueue statement changed: nmc.queue.pgq.enqueue_in needs a look")
    return ctes


_ENQUEUE_CTES = _enqueue_ctes()


def enqueue_in(statement: CteStatement, entrypoint: str, payload: bytes, dedupe_key: str, when: str = "") -> None:
    """PgQueuer's own enqueue of one job due now (`on_conflict="skip"`: a waiting job with the key is
    kept), as parts of the caller's `statement`: a row and the job that wakes the worker for it in one
    round trip. Only when `when` (SQL over the statement's earlier parts) holds, if given. Takes the CTE
    names `input`, `inserted` and `logged`: one job per statement.
    `tests/unit/test_pgq_enqueue_in.py` pins the statement against the installed PgQueuer."""
    ctes = _ENQUEUE_CTES
    if when:
        ctes = ctes.replace(_ENQUEUE_INPUT_ROWS, f"{_ENQUEUE_INPUT_ROWS} WHERE {when}", 1)
    statement.with_ctes(ctes, job_values(entrypoint, payload, dedupe_key))


def job_values(entrypoint: str, payload: bytes, dedupe_key: str) -> tuple[list[Any], ...]:
    """The `$1`-`$6` of PgQueuer's enqueue for one job due now, normalized as `Queries.enqueue` does it (without
    its tracing headers: no PgQueuer tracer is configured here)."""
    job = query_helpers.normalize_enqueue_params(entrypoint, payload, 0, None, dedupe_key, None)
    headers = [to_json(header).decode() for header in job.headers]
    return job.priority, job.entrypoint, job.payload, job.execute_after, job.dedupe_key, headers


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
    """PgQueuer's queue manager with two round trips per wake-up instead of five (ADR 0020).

    At 50 missed calls/s every job is a wake-up of its own. PgQueuer then dequeues, dequeues again
    (empty), and asks three probes. Here a dequeue that came back short of a full batch is the last
    one: the queue was drained in its snapshot, and what arrived since is what the probe asks about.
    The probe asks PgQueuer's three questions in one statement. The decision is PgQueuer's own
    (re-poll when a job is due, wake for the next deferred one, else wait for a NOTIFY or the
    timeout), except that a job due right after a dequeue that found work is dequeued at once, not
    0.1 s later: it is the job that committed while the last dequeue ran. PgQueuer's short wait stays
    for a job due that a dequeue could not take (an entrypoint at its concurrency limit), so that
    never spins. `tests/integration/test_pgq_consumer.py` pins both overridden methods.
    """

    # Whether the last `fetch_jobs` took a job: a job due now is then one that just arrived.
    took_work: bool = dataclasses.field(init=False, default=False)

    async def fetch_jobs(
        self, batch_size: int, global_concurrency_limit: int | None, heartbeat_timeout: timedelta
    ) -> AsyncGenerator[Job, None]:
        self.took_work = False
        while not self.shutdown.is_set():
            limits = {
                name: EntrypointExecutionParameter(
                    concurrency_limit=self.entrypoint_registry[name].parameters.concurrency_limit
                )
                for name in self.entrypoints_below_capacity_limits()
            }
            jobs = await self.queries.dequeue(
                batch_size=batch_size,
                entrypoints=limits,
                queue_manager_id=self.queue_manager_id,
                global_concurrency_limit=global_concurrency_limit,
                heartbeat_timeout=heartbeat_timeout,
            )
            self.took_work = self.took_work or bool(jobs)
            for job in jobs:
                yield job
            if len(jobs) < batch_size:
                return

    async def _effective_dequeue_timeout(self, dequeue_timeout: timedelta) -> timedelta:
        entrypoints = list(self.entrypoint_registry.keys())
        rows = await self.queries.driver.fetch(_WAKE_UP_PROBE, entrypoints)  # type: ignore[attr-defined]
        due = bool(rows and rows[0]["due"])
        eta = rows[0]["eta"] if rows else None
        if due:
            return timedelta(0) if self.took_work else self.min_dequeue_poll_interval
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

"""PgQueuer: transactional enqueue on the caller's connection, entrypoint names, schema DDL."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Queries
from pgqueuer.adapters.persistence import qb

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


def install_sql() -> str:
    """PgQueuer's own DDL, applied by our Alembic migration."""
    return _ENVIRONMENT.build_install_query()


def uninstall_sql() -> str:
    return _ENVIRONMENT.build_uninstall_query()

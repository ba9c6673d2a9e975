"""One engine per process, the session factory, and the Alembic configuration (advanced-alchemy)."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import asyncpg
import msgspec
from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import NullPool, Pool

from nmc.settings import Settings, get_settings

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "db"
metadata = orm_registry.metadata


def alchemy_config(settings: Settings | None = None) -> SQLAlchemyAsyncConfig:
    settings = settings or get_settings()
    # Under ENVIRONMENT=test the app and the test code run on different event loops (Litestar's
    # test client has its own), and a pooled asyncpg connection cannot cross loops.
    engine = (
        EngineConfig(poolclass=NullPool)
        if settings.ENVIRONMENT == "test"
        # No pre-ping: it cost three round trips per checkout on the webhook path. A connection
        # broken by a Postgres restart fails one request (providers retry webhooks), SQLAlchemy
        # then invalidates the pool; recycling bounds how long an idle connection is trusted.
        # A fixed size, no overflow: the process never opens more than its share of the server's
        # connections (README "Connection budget"); a burst waits for a connection instead.
        else EngineConfig(pool_size=settings.DB_POOL_SIZE, max_overflow=0, pool_timeout=30, pool_recycle=600)
    )
    return SQLAlchemyAsyncConfig(
        connection_string=settings.sqlalchemy_url,
        engine_config=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        # The request's session is `db_session` (`request_transaction`, which commits it); the plugin's
        # own dependency goes by another name, and its before-send handler only closes the session.
        session_dependency_key=SESSION_IN_SCOPE,
        before_send_handler=None,
        metadata=metadata,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            script_config=str(MIGRATIONS_DIR / "alembic.ini"),
            version_table_name="alembic_version",
            compare_type=True,
            render_as_batch=False,
        ),
    )


SESSION_IN_SCOPE = "db_session_in_scope"


async def request_transaction(db_session_in_scope: AsyncSession) -> AsyncIterator[AsyncSession]:
    """The `db_session` of every route: committed once the handler returned, before the answer is sent,
    so a failed commit becomes an error answer (problem details, 503 while the database is unreachable)
    and never a 2xx for work that was not stored. advanced-alchemy's autocommit handler commits in
    `before_send` and only logs a failure (at debug) while the 2xx goes out. A handler that raised
    rolls back."""
    try:
        yield db_session_in_scope
    except BaseException:
        await db_session_in_scope.rollback()
        raise
    await db_session_in_scope.commit()


_config: SQLAlchemyAsyncConfig | None = None


def discard_broken_connections() -> None:
    """After the database went away, drop every pooled connection: the raw asyncpg statements bypass
    SQLAlchemy's own disconnect detection, so a broken connection would otherwise be handed out again."""
    if _config is not None and _config.engine_instance is not None:
        _config.engine_instance.sync_engine.pool.dispose()


def get_alchemy_config() -> SQLAlchemyAsyncConfig:
    """The process-wide config; the web app's plugin and the worker share it."""
    global _config
    if _config is None:
        _config = alchemy_config()
    return _config


@asynccontextmanager
async def session_scope() -> AsyncIterator[AsyncSession]:
    """A session outside a request (worker, CLI): commits on success, rolls back on error."""
    config = get_alchemy_config()
    async with config.get_session() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# Where a plain-SQL statement runs: a SQLAlchemy session's transaction (the API, the CLIs, `replay`), or
# a hot-pool asyncpg connection already in a transaction (the Twilio webhooks, the worker's hot path).
Transactional: TypeAlias = AsyncSession | asyncpg.Connection


async def raw_connection(session: Transactional) -> asyncpg.Connection:
    """The asyncpg connection under the session, inside the session's transaction (a hot-pool
    connection is its own: in a transaction, or autocommitting one statement at a time, as a
    `CteStatement`'s webhook does for its routing read).

    For the few hot statements written as plain SQL, and for PgQueuer's transactional enqueue. The
    SQLAlchemy asyncpg adapter sends BEGIN lazily with its first statement; a raw write before that
    would autocommit and survive a rollback, so the adapter's transaction is started here first.
    """
    if isinstance(session, asyncpg.Connection):
        return session
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapted = raw.dbapi_connection
    driver_connection = raw.driver_connection
    assert isinstance(driver_connection, asyncpg.Connection)
    if not driver_connection.is_in_transaction():
        # The adapter's own BEGIN (private API of SQLAlchemy's asyncpg dialect): it then knows its
        # transaction, and commit/rollback of the session cover our raw writes. The rollback tests
        # in tests/integration/test_outbox.py fail if this stops holding.
        await adapted._start_transaction()  # type: ignore[union-attr]
    assert driver_connection.is_in_transaction()
    return driver_connection


# Postgres is down, restarting or full: a request cannot be served now, but may be in a moment.
# What the asyncpg dialect raises when we use the driver connection under a session ourselves
# (`raw_connection`): a PEP 249 error, not wrapped in SQLAlchemy's DBAPIError.
DRIVER_ERROR: type[Exception] = AsyncAdapt_asyncpg_dbapi.Error

DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


def _closed_connection(exc: BaseException | None) -> bool:
    """asyncpg's client-side error for a connection the server already closed (other InterfaceErrors
    are our bugs, not the database's absence)."""
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def database_unavailable(exc: BaseException) -> bool:
    """Is `exc` the database being unreachable (rather than a query or a bug)?"""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or (exc.orig is not None and database_unavailable(exc.orig))
    cause = exc.__cause__
    return (
        isinstance(exc, DATABASE_UNAVAILABLE)
        or isinstance(cause, DATABASE_UNAVAILABLE)
        or _closed_connection(exc)
        or _closed_connection(cause)
    )


@event.listens_for(Pool, "checkout")
def _refuse_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection the server closed (a Postgres restart) is replaced at checkout, without a
    round trip: asyncpg already knows it is closed. SQLAlchemy's documented way: raising
    DisconnectionError here makes the pool drop it and hand out another. (No `pool_pre_ping`: that
    costs round trips on every checkout of the webhook path.)"""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if isinstance(driver, asyncpg.Connection) and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


# A CTE for a write whose commit need not wait for the disk (ADR 0021): the statement's own implicit
# transaction commits with `synchronous_commit = off`. Only for a write that the retry of the same work
# redoes when a database crash loses it, and that is always followed, before anything leaves the system,
# by a synchronous commit (which flushes every earlier commit's WAL with its own): the dispatcher's claim,
# the first SMS's context query. The statement must read `async_commit` (e.g. `CROSS JOIN async_commit`):
# PostgreSQL does not evaluate a CTE nothing reads.
ASYNC_COMMIT = "async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS commit_mode)"

_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=256)  # a hot statement's parts are renumbered alike on every request
def numbered_from(sql: str, first: int) -> str:
    """`sql` with its placeholders `$1`, `$2`… renumbered from `$first`."""
    return _PLACEHOLDER.sub(lambda number: f"${first + int(number[1]) - 1}", sql)


@dataclass
class CteStatement:
    """One statement of data-modifying CTEs that several modules write into, each with its own part.

    A write that spans modules (a webhook's ledger row, the call it moves, the event it publishes, that
    event's job) as one autocommitted statement: atomic like a transaction, without its BEGIN, COMMIT and
    a round trip per part (ADR 0021). Each part binds its values as `$1`… of its own SQL (renumbered
    here); a later part reads an earlier one by its CTE name, and every part runs to completion whether
    or not anything reads it (PostgreSQL's rule for data-modifying CTEs). The final SELECT returns the
    `columns` parts asked for. All parts see one snapshot: a part cannot read a row an earlier part wrote,
    except through that part's RETURNING.
    """

    ctes: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    def with_cte(self, name: str, sql: str, values: Sequence[Any]) -> None:
        """Add `name AS (sql)`, its `$1`… bound to `values`."""
        self.ctes.append(f"{name} AS ({numbered_from(sql, len(self.values) + 1)})")
        self.values.extend(values)

    def with_ctes(self, sql: str, values: Sequence[Any]) -> None:
        """Add several CTEs written as one text (`a AS (…), b AS (…)`), bound as `with_cte` binds."""
        self.ctes.append(numbered_from(sql, len(self.values) + 1))
        self.values.extend(values)

    def returning(self, column: str) -> None:
        """A column of the final SELECT (an expression over the CTEs, `AS` its name)."""
        self.columns.append(column)

    @property
    def sql(self) -> str:
        ctes = ",\n".join(self.ctes)
        return f"WITH {ctes}\nSELECT {', '.join(self.columns) or 'NULL'}"

    async def run(self, connection: asyncpg.Connection) -> asyncpg.Record:
        """Run it (autocommitted, unless `connection` is in a transaction): the row of `columns`."""
        row: asyncpg.Record = await connection.fetchrow(self.sql, *self.values)
        return row


def json_column(value: Any) -> Any:
    """A JSON column's value: text on the session's raw connection (as on SQLAlchemy's own asyncpg
    connections), already decoded on the hot pool."""
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


# The worker's first-SMS path runs on a plain asyncpg pool: there the cost of building SQLAlchemy
# statements was larger than the database round trips (benchmarked; see README). JSON columns are
# exchanged as JSON text, as on SQLAlchemy's own asyncpg connections, so SQL helpers work on both.
# One pool per event loop: a process runs one loop (web, worker), but the in-process tests run the app in
# a test client's loop beside the test's own, and a pool must not be used from another loop.
_hot_pools: dict[asyncio.AbstractEventLoop, asyncpg.Pool] = {}
_hot_pool_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None


def _creation_lock() -> asyncio.Lock:
    """A lock of the running loop's."""
    global _hot_pool_lock
    loop = asyncio.get_running_loop()
    if _hot_pool_lock is None or _hot_pool_lock[0] is not loop:
        _hot_pool_lock = (loop, asyncio.Lock())
    return _hot_pool_lock[1]


async def _json_codecs(connection: asyncpg.Connection) -> None:
    for name, prefix in (("json", b""), ("jsonb", b"\x01")):
        await connection.set_type_codec(
            name,
            encoder=lambda text, prefix=prefix: prefix + text.encode(),
            decoder=lambda data, prefix=prefix: json.loads(data[len(prefix) :]),
            schema="pg_catalog",
            format="binary",
        )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset (RESET ALL, UNLISTEN, unlock: two round trips per
    release). Hot-pool users set no session state and always end their transaction."""


async def hot_pool() -> asyncpg.Pool:
    """The loop's one pool, created once even when a backlog of dispatches asks for it at once."""
    loop = asyncio.get_running_loop()
    if (pool := _hot_pools.get(loop)) is not None:
        return pool
    async with _creation_lock():
        if loop not in _hot_pools:
            for closed in [other for other in _hot_pools if other.is_closed()]:
                del _hot_pools[closed]  # its connections went with it
            _hot_pools[loop] = await asyncpg.create_pool(
                get_settings().DATABASE_URL,
                min_size=1,
                max_size=get_settings().DB_HOT_POOL_SIZE,
                init=_json_codecs,
                reset=_keep_session,
                max_inactive_connection_lifetime=60,
            )
    return _hot_pools[loop]


@asynccontextmanager
async def hot_connection() -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection outside any transaction: each statement commits on its own."""
    async with (await hot_pool()).acquire() as connection:
        yield connection


@asynccontextmanager
async def hot_transaction() -> AsyncIterator[asyncpg.Connection]:
    """A pooled asyncpg connection in a transaction: committed on success, rolled back on error."""
    async with (await hot_pool()).acquire() as connection, connection.transaction():
        yield connection


def run_and_dispose(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion, then close this process's pools (the CLIs)."""

    async def with_cleanup() -> T:
        try:
            return await coroutine
        finally:
            await dispose_engine()

    return asyncio.run(with_cleanup())


async def dispose_engine() -> None:
    if _config is not None and _config.engine_instance is not None:
        await _config.engine_instance.dispose()
    await close_hot_pool()


async def close_hot_pool() -> None:
    """Close the running loop's pool (the web's shutdown, the end of a CLI command)."""
    if (pool := _hot_pools.pop(asyncio.get_running_loop(), None)) is not None:
        await pool.close()


def execute_script(sql: str) -> None:
    """Run a multi-statement DDL script inside a migration's transaction.

    asyncpg prepares every SQLAlchemy statement, and a prepared statement holds one command; the
    libraries' install scripts (PgQueuer, dramatiq-postgres) hold many. Online, they go through the
    raw connection's simple-query protocol, on the migration's own connection and transaction.
    """
    from alembic import context, op
    from sqlalchemy.util import await_only

    if context.is_offline_mode():
        op.execute(sql)
        return
    adapted = op.get_bind().connection.dbapi_connection
    await_only(adapted.driver_connection.execute(sql))  # type: ignore[union-attr]

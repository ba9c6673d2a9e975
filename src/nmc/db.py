"""One engine per process, the session factory, and the Alembic configuration (advanced-alchemy)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.pool import NullPool

from nmc.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "db"
metadata = orm_registry.metadata


def alchemy_config(settings: Settings | None = None) -> SQLAlchemyAsyncConfig:
    settings = settings or get_settings()
    # Under ENVIRONMENT=test the app and the test code run on different event loops (Litestar's
    # test client has its own), and a pooled asyncpg connection cannot cross loops.
    engine = (
        EngineConfig(poolclass=NullPool)
        if settings.ENVIRONMENT == "test"
        else EngineConfig(pool_size=20, max_overflow=20, pool_pre_ping=True)
    )
    return SQLAlchemyAsyncConfig(
        connection_string=settings.sqlalchemy_url,
        engine_config=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        metadata=metadata,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            script_config=str(MIGRATIONS_DIR / "alembic.ini"),
            version_table_name="alembic_version",
            compare_type=True,
            render_as_batch=False,
        ),
    )


_config: SQLAlchemyAsyncConfig | None = None


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


async def raw_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session's transaction (for transactional PgQueuer enqueue)."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver_connection = raw.driver_connection
    assert isinstance(driver_connection, asyncpg.Connection)
    return driver_connection


async def dispose_engine() -> None:
    if _config is not None and _config.engine_instance is not None:
        await _config.engine_instance.dispose()


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

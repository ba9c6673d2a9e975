"""Alembic environment: every migration runs in its own transaction (runbook §4.3: additive first).

Only our own tables are compared by autogenerate; PgQueuer's and Dramatiq's objects are installed
by migrations but owned by those libraries.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from nmc.models import metadata
from nmc.settings import get_settings

config = context.config


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Skip tables we do not declare (PgQueuer's, Dramatiq's schema) when comparing."""
    if type_ == "table" and reflected and compare_to is None:
        return False
    return not (type_ == "table" and getattr(obj, "schema", None) == "dramatiq")


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        include_object=include_object,
        transaction_per_migration=True,
        user_module_prefix="sa.",
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=get_settings().sqlalchemy_url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = async_engine_from_config(
        {"sqlalchemy.url": get_settings().sqlalchemy_url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())

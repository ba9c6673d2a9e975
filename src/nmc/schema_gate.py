"""A worker or jobs process that finds the database's schema behind its code waits, logging why,
instead of crashing or running against it (issue #13, runbook §4.3: a deploy's migrations run in the
web's pre-deploy step, before new worker code may touch the database).

Compared at start: the revisions in `alembic_version` with the code's heads (db/versions). Equal: go.
All known to the code but not its heads: behind — wait and check again every `POLL_SECONDS`, logging
`schema.behind_code` once a minute. A revision the code does not know: the database is ahead (this is
older code, e.g. a rollback; migrations are additive), so go.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog
from alembic.config import Config
from alembic.script import ScriptDirectory

from nmc.db import MIGRATIONS_DIR
from nmc.settings import get_settings

log = structlog.get_logger(module="schema")

POLL_SECONDS = 2.0
LOG_EVERY_SECONDS = 60.0


def code_heads() -> set[str]:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return set(ScriptDirectory.from_config(config).get_heads())


def known_revisions() -> set[str]:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


async def database_revisions(url: str) -> set[str]:
    connection = await asyncpg.connect(url)
    try:
        exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not exists:
            return set()
        return {row["version_num"] for row in await connection.fetch("SELECT version_num FROM alembic_version")}
    finally:
        await connection.close()


def compare(database: set[str], heads: set[str], known: set[str]) -> str:
    """'current', 'ahead' (the database has a revision this code does not know) or 'behind'."""
    if database == heads:
        return "current"
    if database - known:
        return "ahead"
    return "behind"


async def wait_for_schema(process: str, *, poll_seconds: float = POLL_SECONDS) -> str:
    """Return once the schema is not behind this code; returns the verdict that let it go."""
    heads, known = code_heads(), known_revisions()
    url = get_settings().DATABASE_URL
    last_log = 0.0
    while True:
        error: str | None = None
        try:
            verdict = compare(await database_revisions(url), heads, known)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            verdict, error = "unreachable", f"{type(exc).__name__}: {exc}"
        if verdict in ("current", "ahead"):
            if verdict == "ahead":
                log.warning("schema.ahead_of_code", process=process, code_heads=sorted(heads))
            if last_log:
                log.info("schema.ready", process=process)
            return verdict
        if time.monotonic() - last_log >= LOG_EVERY_SECONDS:
            last_log = time.monotonic()
            if verdict == "unreachable":
                log.warning("schema.database_unreachable", process=process, error=error)
            else:
                log.warning(
                    "schema.behind_code",
                    process=process,
                    code_heads=sorted(heads),
                    hint="waiting for the deploy's migrations (nmc db upgrade, the web's pre-deploy command)",
                )
        await asyncio.sleep(poll_seconds)

"""What the CLI does against the database, outside any request."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from nmc.db import MIGRATIONS_DIR, session_scope

QUERIES_DIR = MIGRATIONS_DIR / "queries"


def named_queries() -> list[str]:
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


async def run_named_query(name: str) -> list[dict[str, Any]]:
    path = QUERIES_DIR / f"{name}.sql"
    if "/" in name or not path.is_file():
        raise FileNotFoundError(f"no query {name!r}; available: {', '.join(named_queries())}")
    async with session_scope() as session:
        # Ops queries only read: the transaction is READ ONLY, so none can write (issue #13).
        await session.execute(text("SET TRANSACTION READ ONLY"))
        result = await session.execute(text(path.read_text()))
        return [dict(row) for row in result.mappings()]

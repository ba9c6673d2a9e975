"""`/healthz` for the platform's health check."""

from __future__ import annotations

import asyncio

from litestar import get
from litestar.di import NamedDependency
from litestar.response import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

HEALTH_TIMEOUT_SECONDS = 2.0


@get("/healthz", include_in_schema=False)
async def healthz(db_session: NamedDependency[AsyncSession]) -> Response[dict[str, str]]:
    """200 while the database answers, 503 otherwise."""
    try:
        await asyncio.wait_for(db_session.execute(text("SELECT 1")), HEALTH_TIMEOUT_SECONDS)
    except Exception as exc:
        return Response({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return Response({"status": "ok", "database": "ok"})

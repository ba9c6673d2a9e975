"""What onboarding's checklist asks of calendars (issue #15): whether the tenant has a calendar connected."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from nmc.calendars.models import ConnectionStatus


async def calendar_connected(connection: asyncpg.Connection, tenant_id: UUID) -> bool:
    """At least one resource's calendar is connected and in sync (not waiting for a new grant)."""
    return bool(
        await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM calendar_connections WHERE tenant_id = $1 AND status = $2)",
            tenant_id,
            ConnectionStatus.ACTIVE,
        )
    )

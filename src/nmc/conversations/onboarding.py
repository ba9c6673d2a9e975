"""What onboarding's checklist asks of conversations (issue #15): whether the owner reviewed the texts
(saved the messaging settings: templates, quiet hours, follow-ups, at least once)."""

from __future__ import annotations

from uuid import UUID

import asyncpg


async def messaging_settings_saved(connection: asyncpg.Connection, tenant_id: UUID) -> bool:
    return bool(
        await connection.fetchval("SELECT EXISTS (SELECT 1 FROM conv_settings WHERE tenant_id = $1)", tenant_id)
    )

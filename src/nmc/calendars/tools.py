"""Operators' tools: `just calendars-sync` (a sync now, in this process, printing what changed) and
`just calendars-rotate-tokens` (every stored token re-encrypted under the current SECRET_KEY)."""

from __future__ import annotations

from uuid import UUID

from nmc.calendars import keys, store
from nmc.calendars.sync import SyncReport, run_sync
from nmc.db import raw_connection, session_scope


async def sync_now(
    *, connection_id: UUID | None = None, tenant_id: UUID | None = None, everything: bool = False, full: bool = False
) -> list[SyncReport]:
    """Sync the connections named (one, a tenant's, or all active ones) now; forced past any backoff."""
    async with session_scope() as session:
        connection = await raw_connection(session)
        if connection_id is not None:
            row = await store.get(connection, connection_id)
            rows = [row] if row is not None else []
        elif tenant_id is not None or everything:
            rows = await store.list_all(connection, tenant_id)
        else:
            raise ValueError("say which: a connection, a tenant, or all")
    reports = []
    for row in rows:
        if row.status != "active":
            reports.append(SyncReport(row.id, "skipped", error=f"status {row.status} (reconnect it)"))
            continue
        reports.append(await run_sync(row.id, full=full, forced=True))
    return reports


_TOKENS = "SELECT id, refresh_token_encrypted, access_token_encrypted FROM calendar_connections FOR UPDATE"
_STORE = "UPDATE calendar_connections SET refresh_token_encrypted = $2, access_token_encrypted = $3 WHERE id = $1"


async def rotate_tokens() -> tuple[int, int]:
    """Re-encrypt every token under SECRET_KEY (run with SECRET_KEY_PREVIOUS set to the old key);
    returns (rotated, unreadable). Unreadable tokens are left as they are: those connections need a reconnect."""
    rotated = unreadable = 0
    async with session_scope() as session:
        connection = await raw_connection(session)
        for row in await connection.fetch(_TOKENS):
            try:
                refresh = keys.reencrypt(row["refresh_token_encrypted"])
                access = keys.reencrypt(row["access_token_encrypted"]) if row["access_token_encrypted"] else None
            except keys.Undecryptable:
                unreadable += 1
                continue
            await connection.execute(_STORE, row["id"], refresh, access)
            rotated += 1
    return rotated, unreadable

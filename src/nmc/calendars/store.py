"""Calendars' SQL: connections, channels, OAuth states, event links, counters (its own tables only;
the tenant's zone comes from identity's published `tenant_profiles` view)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from nmc.calendars.models import ConnectionStatus

_CONNECTION_COLUMNS = """
    c.id, c.tenant_id, c.resource_id, c.provider, c.calendar_id, c.status, c.connected_by, c.scopes,
    c.refresh_token_encrypted, c.access_token_encrypted, c.access_token_expires_at, c.sync_token,
    c.last_full_sync_at, c.last_synced_at, c.last_sync_attempt_at, c.next_poll_at, c.sync_requested_at,
    c.sync_lease_until, c.last_error, c.last_error_at, c.consecutive_failures, c.reauth_notified_at,
    c.watch_attempted_at, c.watch_error, c.created_at, c.updated_at, t.timezone
"""


@dataclass(frozen=True)
class ConnectionRow:
    id: UUID
    tenant_id: UUID
    resource_id: UUID
    provider: str
    calendar_id: str
    status: str
    connected_by: str | None
    scopes: str
    refresh_token_encrypted: str
    access_token_encrypted: str | None
    access_token_expires_at: datetime | None
    sync_token: str | None
    last_full_sync_at: datetime | None
    last_synced_at: datetime | None
    last_sync_attempt_at: datetime | None
    next_poll_at: datetime | None
    sync_requested_at: datetime | None
    sync_lease_until: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    reauth_notified_at: datetime | None
    watch_attempted_at: datetime | None
    watch_error: str | None
    created_at: datetime
    updated_at: datetime
    timezone: str

    @classmethod
    def of(cls, record: asyncpg.Record) -> ConnectionRow:
        return cls(**dict(record))


def _one(record: asyncpg.Record | None) -> ConnectionRow | None:
    return ConnectionRow.of(record) if record is not None else None


_GET = f"""
    SELECT {_CONNECTION_COLUMNS} FROM calendar_connections c JOIN tenant_profiles t ON t.id = c.tenant_id
    WHERE c.id = $1
"""
_GET_FOR_TENANT = _GET + " AND c.tenant_id = $2"
_LIST = f"""
    SELECT {_CONNECTION_COLUMNS} FROM calendar_connections c JOIN tenant_profiles t ON t.id = c.tenant_id
    WHERE ($1::uuid IS NULL OR c.tenant_id = $1)
    ORDER BY c.created_at, c.id
"""
_FOR_RESOURCE = f"""
    SELECT {_CONNECTION_COLUMNS} FROM calendar_connections c JOIN tenant_profiles t ON t.id = c.tenant_id
    WHERE c.tenant_id = $1 AND c.resource_id = $2 AND c.provider = $3
"""


async def get(
    connection: asyncpg.Connection, connection_id: UUID, tenant_id: UUID | None = None
) -> ConnectionRow | None:
    if tenant_id is None:
        return _one(await connection.fetchrow(_GET, connection_id))
    return _one(await connection.fetchrow(_GET_FOR_TENANT, connection_id, tenant_id))


async def list_all(connection: asyncpg.Connection, tenant_id: UUID | None = None) -> list[ConnectionRow]:
    return [ConnectionRow.of(r) for r in await connection.fetch(_LIST, tenant_id)]


async def for_resource(
    connection: asyncpg.Connection, tenant_id: UUID, resource_id: UUID, provider: str
) -> ConnectionRow | None:
    return _one(await connection.fetchrow(_FOR_RESOURCE, tenant_id, resource_id, provider))


# A reconnect of a resource's calendar replaces the grant, resumes it and starts from a full sync.
_UPSERT = """
    INSERT INTO calendar_connections AS c (id, tenant_id, resource_id, provider, calendar_id, status, connected_by,
                                           scopes, refresh_token_encrypted, access_token_encrypted,
                                           access_token_expires_at)
    VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10)
    ON CONFLICT (resource_id, provider) DO UPDATE
        SET calendar_id = EXCLUDED.calendar_id, status = 'active', connected_by = EXCLUDED.connected_by,
            scopes = EXCLUDED.scopes, refresh_token_encrypted = EXCLUDED.refresh_token_encrypted,
            access_token_encrypted = EXCLUDED.access_token_encrypted,
            access_token_expires_at = EXCLUDED.access_token_expires_at, sync_token = NULL, next_poll_at = NULL,
            last_error = NULL, last_error_at = NULL, consecutive_failures = 0, reauth_notified_at = NULL,
            watch_error = NULL, watch_attempted_at = NULL, updated_at = now()
    RETURNING id
"""


async def upsert(connection: asyncpg.Connection, **values: Any) -> UUID:
    connection_id: UUID = await connection.fetchval(
        _UPSERT,
        values["id"],
        values["tenant_id"],
        values["resource_id"],
        values["provider"],
        values["calendar_id"],
        values["connected_by"],
        values["scopes"],
        values["refresh_token_encrypted"],
        values["access_token_encrypted"],
        values["access_token_expires_at"],
    )
    return connection_id


_MOVE = """
    UPDATE calendar_connections
    SET calendar_id = $3, resource_id = $4, sync_token = NULL, next_poll_at = NULL, updated_at = now()
    WHERE id = $1 AND tenant_id = $2
"""


async def move(
    connection: asyncpg.Connection, connection_id: UUID, tenant_id: UUID, calendar_id: str, resource_id: UUID
) -> None:
    await connection.execute(_MOVE, connection_id, tenant_id, calendar_id, resource_id)


async def delete(connection: asyncpg.Connection, connection_id: UUID, tenant_id: UUID) -> bool:
    result = await connection.execute(
        "DELETE FROM calendar_connections WHERE id = $1 AND tenant_id = $2", connection_id, tenant_id
    )
    return result.endswith(" 1")


_TOKENS = """
    UPDATE calendar_connections
    SET access_token_encrypted = $2, access_token_expires_at = $3,
        refresh_token_encrypted = coalesce($4, refresh_token_encrypted), updated_at = now()
    WHERE id = $1
"""


async def store_tokens(
    connection: asyncpg.Connection,
    connection_id: UUID,
    access_token_encrypted: str,
    expires_at: datetime,
    refresh_token_encrypted: str | None,
) -> None:
    await connection.execute(_TOKENS, connection_id, access_token_encrypted, expires_at, refresh_token_encrypted)


# ---------------------------------------------------------------------------- sync bookkeeping
# One sync per connection at a time: the lease (a crashed sync's lapses). Clearing the request flag here
# is what coalesces a burst of notifications into the sync that starts now. A connection backing off after
# failures is left alone until its next poll, unless forced.
_CLAIM = f"""
    WITH claimed AS (
        UPDATE calendar_connections
        SET sync_lease_until = now() + make_interval(secs => $2), sync_requested_at = NULL,
            last_sync_attempt_at = now()
        WHERE id = $1 AND status = 'active'
          AND (sync_lease_until IS NULL OR sync_lease_until < now())
          AND ($3 OR consecutive_failures = 0 OR next_poll_at IS NULL OR next_poll_at <= now())
        RETURNING *
    )
    SELECT {_CONNECTION_COLUMNS} FROM claimed c JOIN tenant_profiles t ON t.id = c.tenant_id
"""


async def claim_for_sync(
    connection: asyncpg.Connection, connection_id: UUID, lease_seconds: float, forced: bool
) -> ConnectionRow | None:
    return _one(await connection.fetchrow(_CLAIM, connection_id, lease_seconds, forced))


_SYNCED = """
    UPDATE calendar_connections
    SET sync_token = $3, last_synced_at = now(), last_full_sync_at = CASE WHEN $4 THEN now() ELSE last_full_sync_at END,
        consecutive_failures = 0, next_poll_at = now() + make_interval(secs => $5), sync_lease_until = NULL,
        updated_at = now()
    WHERE id = $1 AND sync_lease_until = $2 AND status = 'active'
"""


async def record_synced(
    connection: asyncpg.Connection,
    connection_id: UUID,
    lease: datetime | None,
    cursor: str | None,
    full: bool,
    next_poll_seconds: float,
) -> bool:
    """The cursor and the success, only while the lease is still ours (else the caller rolls back)."""
    result = await connection.execute(_SYNCED, connection_id, lease, cursor, full, next_poll_seconds)
    return result.endswith(" 1")


_FAILED = """
    UPDATE calendar_connections
    SET last_error = left($2, 500), last_error_at = now(), consecutive_failures = consecutive_failures + 1,
        next_poll_at = now() + make_interval(secs => $3), sync_lease_until = NULL,
        status = coalesce($4, status), sync_token = CASE WHEN $5 THEN NULL ELSE sync_token END, updated_at = now()
    WHERE id = $1
    RETURNING consecutive_failures
"""


async def record_failed(
    connection: asyncpg.Connection,
    connection_id: UUID,
    error: str,
    retry_in_seconds: float,
    status: ConnectionStatus | None = None,
    forget_cursor: bool = False,
) -> None:
    await connection.execute(_FAILED, connection_id, error, retry_in_seconds, status, forget_cursor)


async def release_lease(connection: asyncpg.Connection, connection_id: UUID) -> None:
    await connection.execute("UPDATE calendar_connections SET sync_lease_until = NULL WHERE id = $1", connection_id)


# The owner is told once per loss of the grant: the first to claim it publishes.
_CLAIM_REAUTH_NOTICE = """
    UPDATE calendar_connections SET reauth_notified_at = now()
    WHERE id = $1 AND reauth_notified_at IS NULL
    RETURNING id
"""


async def claim_reauth_notice(connection: asyncpg.Connection, connection_id: UUID) -> bool:
    return await connection.fetchval(_CLAIM_REAUTH_NOTICE, connection_id) is not None


_REQUEST_SYNC = """
    UPDATE calendar_connections SET sync_requested_at = now()
    WHERE id = $1 AND status = 'active'
      AND (sync_requested_at IS NULL OR sync_requested_at < now() - make_interval(secs => $2))
    RETURNING id
"""
# A request older than this is taken for lost (its job never ran): the next one queues another.
REQUEST_STALE_SECONDS = 300.0


async def request_sync(
    connection: asyncpg.Connection, connection_id: UUID, stale_after: float = REQUEST_STALE_SECONDS
) -> bool:
    """True when no sync was waiting already (the caller queues one); False: one is queued, it will see this."""
    return await connection.fetchval(_REQUEST_SYNC, connection_id, stale_after) is not None


async def sync_requested(connection: asyncpg.Connection, connection_id: UUID) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT sync_requested_at IS NOT NULL FROM calendar_connections WHERE id = $1", connection_id
        )
    )


# ---------------------------------------------------------------------------- poll tick
_DUE = """
    SELECT id FROM calendar_connections
    WHERE status = 'active' AND provider = $1
      AND (next_poll_at IS NULL OR next_poll_at <= now())
      AND (sync_lease_until IS NULL OR sync_lease_until < now())
    ORDER BY next_poll_at NULLS FIRST
    LIMIT $2
"""


async def due_for_poll(connection: asyncpg.Connection, provider: str, limit: int) -> list[UUID]:
    return [row["id"] for row in await connection.fetch(_DUE, provider, limit)]


# Active connections whose newest open channel expires within `renew_before` (or have none, and have not
# tried to open one within `retry_after`).
_TO_WATCH = """
    SELECT c.id FROM calendar_connections c
    LEFT JOIN LATERAL (
        SELECT max(expires_at) AS expires_at FROM calendar_channels ch
        WHERE ch.connection_id = c.id AND ch.stopped_at IS NULL
    ) AS newest ON true
    WHERE c.status = 'active' AND c.provider = $1
      AND (newest.expires_at IS NULL OR newest.expires_at < now() + make_interval(secs => $2))
      AND (c.watch_attempted_at IS NULL OR c.watch_attempted_at < now() - make_interval(secs => $3)
           OR newest.expires_at IS NOT NULL)
    LIMIT $4
"""


async def due_for_watch(
    connection: asyncpg.Connection, provider: str, renew_before: float, retry_after: float, limit: int
) -> list[UUID]:
    return [row["id"] for row in await connection.fetch(_TO_WATCH, provider, renew_before, retry_after, limit)]


# ---------------------------------------------------------------------------- channels
_OPEN_CHANNEL = """
    INSERT INTO calendar_channels (id, connection_id, tenant_id, resource_id, expires_at) VALUES ($1, $2, $3, $4, $5)
"""


async def add_channel(
    connection: asyncpg.Connection,
    channel_id: str,
    connection_id: UUID,
    tenant_id: UUID,
    resource_id: str | None,
    expires_at: datetime,
) -> None:
    await connection.execute(_OPEN_CHANNEL, channel_id, connection_id, tenant_id, resource_id, expires_at)
    await connection.execute(
        "UPDATE calendar_connections SET watch_attempted_at = now(), watch_error = NULL WHERE id = $1", connection_id
    )


async def watch_failed(connection: asyncpg.Connection, connection_id: UUID, error: str) -> None:
    await connection.execute(
        "UPDATE calendar_connections SET watch_attempted_at = now(), watch_error = left($2, 500) WHERE id = $1",
        connection_id,
        error,
    )


@dataclass(frozen=True)
class ChannelRow:
    id: str
    connection_id: UUID
    tenant_id: UUID
    resource_id: str | None
    expires_at: datetime
    stopped_at: datetime | None


async def channels(connection: asyncpg.Connection, connection_id: UUID) -> list[ChannelRow]:
    rows = await connection.fetch(
        "SELECT id, connection_id, tenant_id, resource_id, expires_at, stopped_at FROM calendar_channels "
        "WHERE connection_id = $1 ORDER BY expires_at",
        connection_id,
    )
    return [ChannelRow(**dict(row)) for row in rows]


async def live_channel(connection: asyncpg.Connection, channel_id: str) -> ChannelRow | None:
    """A channel that is open (not stopped, not expired) on a connection that still exists."""
    row = await connection.fetchrow(
        "SELECT id, connection_id, tenant_id, resource_id, expires_at, stopped_at FROM calendar_channels "
        "WHERE id = $1 AND stopped_at IS NULL AND expires_at > now()",
        channel_id,
    )
    return ChannelRow(**dict(row)) if row else None


async def mark_stopped(connection: asyncpg.Connection, channel_ids: list[str]) -> None:
    await connection.execute(
        "UPDATE calendar_channels SET stopped_at = now() WHERE id = ANY($1::text[]) AND stopped_at IS NULL",
        channel_ids,
    )


async def forget_old_channels(connection: asyncpg.Connection) -> int:
    result = await connection.execute(
        "DELETE FROM calendar_channels WHERE coalesce(stopped_at, expires_at) < now() - interval '7 days'"
    )
    return int(result.split()[-1])


# ---------------------------------------------------------------------------- OAuth states
_ADD_STATE = """
    INSERT INTO calendar_oauth_states (nonce, tenant_id, user_id, resource_id, provider, calendar_id, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


async def add_state(connection: asyncpg.Connection, *values: Any) -> None:
    await connection.execute("DELETE FROM calendar_oauth_states WHERE expires_at < now()")
    await connection.execute(_ADD_STATE, *values)


async def consume_state(connection: asyncpg.Connection, nonce: str, tenant_id: UUID, resource_id: UUID) -> bool:
    """True once: the state was handed out, for this tenant and resource, and has not been used."""
    used = await connection.fetchval(
        "DELETE FROM calendar_oauth_states WHERE nonce = $1 AND tenant_id = $2 AND resource_id = $3 "
        "AND expires_at > now() RETURNING nonce",
        nonce,
        tenant_id,
        resource_id,
    )
    return used is not None


# ---------------------------------------------------------------------------- write-back links
@dataclass(frozen=True)
class LinkRow:
    booking_id: UUID
    connection_id: UUID
    event_id: str
    state: str
    attempts: int
    last_error: str | None


async def links(connection: asyncpg.Connection, booking_id: UUID) -> list[LinkRow]:
    rows = await connection.fetch(
        "SELECT booking_id, connection_id, event_id, state, attempts, last_error FROM calendar_event_links "
        "WHERE booking_id = $1",
        booking_id,
    )
    return [LinkRow(**dict(row)) for row in rows]


_LINK = """
    INSERT INTO calendar_event_links AS l (booking_id, connection_id, tenant_id, event_id, state, attempts, last_error)
    VALUES ($1, $2, $3, $4, $5, 1, left($6, 500))
    ON CONFLICT (booking_id, connection_id) DO UPDATE
        SET event_id = EXCLUDED.event_id, state = EXCLUDED.state, attempts = l.attempts + 1,
            last_error = EXCLUDED.last_error, updated_at = now()
"""


async def record_link(
    connection: asyncpg.Connection,
    booking_id: UUID,
    connection_id: UUID,
    tenant_id: UUID,
    event_id: str,
    state: str,
    error: str | None = None,
) -> None:
    await connection.execute(_LINK, booking_id, connection_id, tenant_id, event_id, state, error)


async def note_error(connection: asyncpg.Connection, connection_id: UUID, error: str) -> None:
    """A failure that is not a sync's (a write-back): visible on the connection, nothing else changes."""
    await connection.execute(
        "UPDATE calendar_connections SET last_error = left($2, 500), last_error_at = now() WHERE id = $1",
        connection_id,
        error,
    )


async def failed_links(connection: asyncpg.Connection, connection_id: UUID) -> list[tuple[UUID, UUID]]:
    rows = await connection.fetch(
        "SELECT booking_id, tenant_id FROM calendar_event_links WHERE connection_id = $1 AND state = 'failed'",
        connection_id,
    )
    return [(row["booking_id"], row["tenant_id"]) for row in rows]


async def failed_link_counts(connection: asyncpg.Connection, connection_ids: list[UUID]) -> dict[UUID, int]:
    rows = await connection.fetch(
        "SELECT connection_id, count(*) AS n FROM calendar_event_links "
        "WHERE connection_id = ANY($1::uuid[]) AND state = 'failed' GROUP BY connection_id",
        connection_ids,
    )
    return {row["connection_id"]: row["n"] for row in rows}


# ---------------------------------------------------------------------------- counters
_COUNT = """
    INSERT INTO calendar_counters AS k (name, provider, count) VALUES ($1, $2, 1)
    ON CONFLICT (name, provider) DO UPDATE SET count = k.count + 1, updated_at = now()
"""


async def count(connection: asyncpg.Connection, name: str, provider: str) -> None:
    await connection.execute(_COUNT, name, provider)


# ---------------------------------------------------------------------------- Jobber (ADR 0016)
_JOBBER_OF_TENANT = f"""
    SELECT {_CONNECTION_COLUMNS} FROM calendar_connections c JOIN tenant_profiles t ON t.id = c.tenant_id
    WHERE c.tenant_id = $1 AND c.provider = 'jobber'
"""
_JOBBER_OF_ACCOUNT = f"""
    SELECT {_CONNECTION_COLUMNS} FROM calendar_connections c JOIN tenant_profiles t ON t.id = c.tenant_id
    WHERE c.calendar_id = $1 AND c.provider = 'jobber'
"""


async def jobber_of_tenant(connection: asyncpg.Connection, tenant_id: UUID) -> ConnectionRow | None:
    return _one(await connection.fetchrow(_JOBBER_OF_TENANT, tenant_id))


async def jobber_of_account(connection: asyncpg.Connection, account_id: str) -> ConnectionRow | None:
    return _one(await connection.fetchrow(_JOBBER_OF_ACCOUNT, account_id))


@dataclass(frozen=True)
class JobberUserRow:
    jobber_user_id: str
    resource_id: UUID
    name: str | None


async def jobber_users(connection: asyncpg.Connection, connection_id: UUID) -> list[JobberUserRow]:
    rows = await connection.fetch(
        "SELECT jobber_user_id, resource_id, name FROM calendar_jobber_users WHERE connection_id = $1 "
        "ORDER BY jobber_user_id",
        connection_id,
    )
    return [JobberUserRow(**dict(row)) for row in rows]


async def map_jobber_user(
    connection: asyncpg.Connection,
    connection_id: UUID,
    tenant_id: UUID,
    jobber_user_id: str,
    resource_id: UUID | None,
    name: str | None,
) -> None:
    """Map a Jobber user to a resource (None: unmap)."""
    if resource_id is None:
        await connection.execute(
            "DELETE FROM calendar_jobber_users WHERE connection_id = $1 AND jobber_user_id = $2",
            connection_id,
            jobber_user_id,
        )
        return
    await connection.execute(
        """
        INSERT INTO calendar_jobber_users (connection_id, jobber_user_id, tenant_id, resource_id, name)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (connection_id, jobber_user_id) DO UPDATE
            SET resource_id = EXCLUDED.resource_id, name = EXCLUDED.name, updated_at = now()
        """,
        connection_id,
        jobber_user_id,
        tenant_id,
        resource_id,
        name,
    )


async def jobber_user_for_resource(
    connection: asyncpg.Connection, connection_id: UUID, resource_id: UUID
) -> str | None:
    """The Jobber user a booking on this resource is assigned to (the first mapped, by id)."""
    user: str | None = await connection.fetchval(
        "SELECT jobber_user_id FROM calendar_jobber_users WHERE connection_id = $1 AND resource_id = $2 "
        "ORDER BY jobber_user_id LIMIT 1",
        connection_id,
        resource_id,
    )
    return user


async def defer_sync(connection: asyncpg.Connection, connection_id: UUID, seconds: float) -> None:
    """A sync that met a throttled provider: not a failure, the next one is due after `seconds`."""
    await connection.execute(
        "UPDATE calendar_connections SET sync_lease_until = NULL, next_poll_at = now() + make_interval(secs => $2), "
        "updated_at = now() WHERE id = $1",
        connection_id,
        seconds,
    )


# One refresher per connection at a time (Jobber's refresh tokens rotate: the old one dies at once).
_TOKEN_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('calendar-token:' || $1::uuid::text, 0))"  # noqa: S105
_CURRENT_TOKENS = """
    SELECT refresh_token_encrypted, access_token_encrypted, access_token_expires_at
    FROM calendar_connections WHERE id = $1
"""


async def lock_tokens(connection: asyncpg.Connection, connection_id: UUID) -> asyncpg.Record | None:
    """Take the connection's refresh lock (until the transaction ends) and read its tokens as they are now."""
    await connection.execute(_TOKEN_LOCK, connection_id)
    return await connection.fetchrow(_CURRENT_TOKENS, connection_id)

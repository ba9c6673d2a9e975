"""Connections: connect (OAuth), list, change, disconnect; access tokens kept fresh; errors masked.

The OAuth dance: `POST /api/calendars/google/connect` signs a `state` (tenant, user, resource, calendar;
ten minutes; its nonce recorded for single use) and answers the consent URL; Google sends the owner's
browser to `GET /oauth/google/callback?code&state`, which verifies and consumes the state, exchanges the
code, checks the granted scopes, stores the connection with its refresh token encrypted, queues the first
(full) sync and the push channel, and redirects to `GOOGLE_REDIRECT_UI_URL` with the outcome.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID, uuid4

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.calendars import keys, store
from nmc.calendars.google import GOOGLE, missing_scopes
from nmc.calendars.models import Provider
from nmc.calendars.provider import AuthRevoked, CalendarProvider, Grant, ProviderError
from nmc.calendars.queueing import queue_sync, queue_watch, queue_write_back
from nmc.calendars.schemas import CalendarConnectionRead, CalendarConnectionUpdate
from nmc.calendars.store import ConnectionRow
from nmc.db import raw_connection, session_scope
from nmc.observability.logging import mask_text
from nmc.problems import InvalidField, NotFound
from nmc.scheduling import BusyBlockSource, clear_external_busy, resource_names
from nmc.settings import get_settings

log = structlog.get_logger(module="calendars")

T = TypeVar("T")
CALLBACK_PATH = "/oauth/google/callback"
REFRESH_MARGIN = timedelta(seconds=60)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_BEARER = re.compile(r"(ya29\.|1//)[\w.-]+")

PROVIDERS: dict[str, CalendarProvider] = {Provider.GOOGLE: GOOGLE}
BUSY_SOURCE = {Provider.GOOGLE: BusyBlockSource.GOOGLE, Provider.JOBBER: BusyBlockSource.JOBBER}


def provider_for(name: str) -> CalendarProvider:
    return PROVIDERS[name]


def masked(error: BaseException | str) -> str:
    """An error as a connection shows it: no phone number, e-mail address or token, at most 500 characters."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = _BEARER.sub("[token]", _EMAIL.sub("[email]", mask_text(text)))
    return text[:500]


def redirect_uri() -> str:
    """The redirect URI to register on the Google OAuth client (README)."""
    return get_settings().public_url(CALLBACK_PATH)


# ---------------------------------------------------------------------------- tokens
async def _persist_grant(connection_id: UUID, grant: Grant) -> None:
    """Its own short transaction: a refresh must stick whatever the caller's transaction does."""
    async with session_scope() as session:
        await store.store_tokens(
            await raw_connection(session),
            connection_id,
            keys.encrypt(grant.access_token),
            grant.expires_at,
            keys.encrypt(grant.refresh_token) if grant.refresh_token else None,
        )


class Tokens:
    """A connection's access token, refreshed before it expires (and once more on a 401)."""

    def __init__(self, row: ConnectionRow) -> None:
        self.row = row
        self.provider = provider_for(row.provider)
        self._access: str | None = None
        self._expires_at = row.access_token_expires_at
        if row.access_token_encrypted and self._expires_at and self._expires_at - REFRESH_MARGIN > datetime.now(UTC):
            try:
                self._access = keys.decrypt(row.access_token_encrypted)
            except keys.Undecryptable:
                self._access = None

    async def refresh(self) -> str:
        try:
            refresh_token = keys.decrypt(self.row.refresh_token_encrypted)
        except keys.Undecryptable as exc:
            raise AuthRevoked(f"stored refresh token unreadable: {exc}") from None
        grant = await self.provider.refresh(refresh_token)
        await _persist_grant(self.row.id, grant)
        self._access, self._expires_at = grant.access_token, grant.expires_at
        return grant.access_token

    async def access(self) -> str:
        if self._access is None:
            return await self.refresh()
        return self._access

    async def call(self, request: Callable[[str], Awaitable[T]]) -> T:
        """`request(token)`; a 401 with a token that looked valid is retried once after a refresh."""
        fresh = self._access is None
        token = await self.access()
        try:
            return await request(token)
        except AuthRevoked as exc:
            if fresh or exc.status != 401:
                raise
        return await request(await self.refresh())


async def stop_channel(tokens: Tokens, channel_id: str, resource_id: str | None) -> None:
    async def stop(token: str) -> None:
        await tokens.provider.stop(token, channel_id, resource_id)

    await tokens.call(stop)


# ---------------------------------------------------------------------------- connect
async def begin_connect(
    session: AsyncSession, tenant_id: UUID, user_id: str, resource_id: UUID, calendar_id: str, provider: str
) -> str:
    """The consent URL for the owner's browser; the `state` in it is good once, for ten minutes."""
    settings = get_settings()
    if provider != Provider.GOOGLE:
        raise InvalidField("provider", "only google can be connected today")
    if not settings.GOOGLE_CLIENT_ID or not settings.GOOGLE_CLIENT_SECRET:
        raise InvalidField("provider", "Google is not configured here (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET)")
    if resource_id not in await resource_names(session, tenant_id, [resource_id]):
        raise InvalidField("resource_id", "no such resource")
    state, claims = keys.sign_state(
        tenant_id=tenant_id, user_id=user_id, resource_id=resource_id, provider=provider, calendar_id=calendar_id
    )
    await store.add_state(
        await raw_connection(session),
        claims.nonce,
        tenant_id,
        user_id,
        resource_id,
        provider,
        calendar_id,
        datetime.fromtimestamp(claims.expires_at, UTC),
    )
    return provider_for(provider).authorization_url(state, redirect_uri())


class StateRefused(ValueError):
    """A callback whose `state` is forged, expired or used already: nothing is stored."""


@dataclass(frozen=True)
class ConnectOutcome:
    outcome: str  # connected | denied | missing_scope | no_refresh_token | failed
    connection_id: UUID | None = None
    detail: str | None = None


async def complete_connect(
    session: AsyncSession, *, code: str | None, state: str | None, error: str | None
) -> ConnectOutcome:
    """The OAuth callback. A bad state raises `StateRefused` (a 400 page); every other outcome is answered
    by a redirect that names it."""
    try:
        claims = keys.verify_state(state or "")
    except keys.BadState as exc:
        raise StateRefused(str(exc)) from None
    connection = await raw_connection(session)
    if not await store.consume_state(connection, claims.nonce, claims.tenant_id, claims.resource_id):
        raise StateRefused("state used already or unknown")
    if error or not code:
        log.info("calendars.connect_denied", error=error or "no code", tenant_id=str(claims.tenant_id))
        return ConnectOutcome("denied", detail=error or "no code")
    provider = provider_for(claims.provider)
    try:
        grant = await provider.exchange_code(code, redirect_uri())
    except ProviderError as exc:
        log.warning("calendars.connect_failed", error=masked(exc), tenant_id=str(claims.tenant_id))
        return ConnectOutcome("failed", detail=masked(exc))
    if missing := missing_scopes(grant.scopes):
        await provider.revoke(grant.access_token)
        return ConnectOutcome("missing_scope", detail=" ".join(missing))
    if not grant.refresh_token:
        return ConnectOutcome(
            "no_refresh_token", detail="Google sent no refresh token; remove the app's access and connect again"
        )
    connection_id = await store.upsert(
        connection,
        id=uuid4(),
        tenant_id=claims.tenant_id,
        resource_id=claims.resource_id,
        provider=claims.provider,
        calendar_id=claims.calendar_id,
        connected_by=claims.user_id,
        scopes=" ".join(sorted(grant.scopes)),
        refresh_token_encrypted=keys.encrypt(grant.refresh_token),
        access_token_encrypted=keys.encrypt(grant.access_token),
        access_token_expires_at=grant.expires_at,
    )
    log.info("calendars.connected", provider=claims.provider, connection_id=str(connection_id))
    return ConnectOutcome("connected", connection_id=connection_id)


async def after_connect(connection_id: UUID) -> None:
    """Once the connection is committed: the first (full) sync, the push channel, and the write-backs that
    failed while the grant was gone."""
    await queue_sync(connection_id, full=True, forced=True)
    await queue_watch(connection_id)
    async with session_scope() as session:
        failed = await store.failed_links(await raw_connection(session), connection_id)
    for booking_id, tenant_id in failed:
        await queue_write_back(tenant_id, booking_id)


# ---------------------------------------------------------------------------- list, change, disconnect
async def list_connections(session: AsyncSession, tenant_id: UUID) -> list[CalendarConnectionRead]:
    connection = await raw_connection(session)
    rows = await store.list_all(connection, tenant_id)
    names = await resource_names(session, tenant_id, list({r.resource_id for r in rows}))
    failed = await store.failed_link_counts(connection, [r.id for r in rows])
    return [to_read(row, names.get(row.resource_id), failed.get(row.id, 0)) for row in rows]


async def get_connection(session: AsyncSession, tenant_id: UUID, connection_id: UUID) -> CalendarConnectionRead:
    connection = await raw_connection(session)
    row = await store.get(connection, connection_id, tenant_id)
    if row is None:
        raise NotFound("calendar connection")
    names = await resource_names(session, tenant_id, [row.resource_id])
    failed = await store.failed_link_counts(connection, [row.id])
    return to_read(row, names.get(row.resource_id), failed.get(row.id, 0))


def to_read(row: ConnectionRow, resource_name: str | None, failed_write_backs: int = 0) -> CalendarConnectionRead:
    return CalendarConnectionRead(
        id=row.id,
        provider=row.provider,
        resource_id=row.resource_id,
        resource_name=resource_name,
        calendar_id=row.calendar_id,
        status=row.status,
        last_synced_at=row.last_synced_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        next_poll_at=row.next_poll_at if row.status == "active" else None,
        failed_write_backs=failed_write_backs,
        push_error=row.watch_error,
        connected_at=row.created_at,
    )


async def update_connection(
    session: AsyncSession, tenant_id: UUID, connection_id: UUID, data: CalendarConnectionUpdate
) -> tuple[CalendarConnectionRead, bool]:
    """Another calendar and/or resource: the old resource's blocks go, the next sync is a full one.
    Returns the connection and whether anything changed (the caller queues the sync after the commit)."""
    connection = await raw_connection(session)
    row = await store.get(connection, connection_id, tenant_id)
    if row is None:
        raise NotFound("calendar connection")
    calendar_id = data.calendar_id if data.calendar_id is not None else row.calendar_id
    resource_id = data.resource_id if data.resource_id is not None else row.resource_id
    if resource_id != row.resource_id and resource_id not in await resource_names(session, tenant_id, [resource_id]):
        raise InvalidField("resource_id", "no such resource")
    changed = (calendar_id, resource_id) != (row.calendar_id, row.resource_id)
    if changed:
        if resource_id != row.resource_id and await store.for_resource(
            connection, tenant_id, resource_id, row.provider
        ):
            raise InvalidField("resource_id", "that resource has a calendar of this provider already")
        await clear_external_busy(session, tenant_id, row.resource_id, BUSY_SOURCE[Provider(row.provider)])
        await store.move(connection, connection_id, tenant_id, calendar_id, resource_id)
    return await get_connection(session, tenant_id, connection_id), changed


async def disconnect(session: AsyncSession, tenant_id: UUID, connection_id: UUID) -> None:
    """Stop the push channels, revoke the grant at the provider, remove the connection and its busy
    blocks. The provider's part is best effort (a channel lapses on its own; a revoked grant is gone):
    the owner's wish to disconnect is never refused because the provider is down."""
    connection = await raw_connection(session)
    row = await store.get(connection, connection_id, tenant_id)
    if row is None:
        raise NotFound("calendar connection")
    provider = provider_for(row.provider)
    tokens = Tokens(row)
    open_channels = [c for c in await store.channels(connection, connection_id) if c.stopped_at is None]
    for channel in open_channels:
        try:
            await stop_channel(tokens, channel.id, channel.resource_id)
        except (ProviderError, keys.Undecryptable) as exc:
            log.warning("calendars.stop_failed", connection_id=str(connection_id), error=masked(exc))
    try:
        await provider.revoke(keys.decrypt(row.refresh_token_encrypted))
    except (ProviderError, keys.Undecryptable) as exc:
        log.warning("calendars.revoke_failed", connection_id=str(connection_id), error=masked(exc))
    removed = await clear_external_busy(session, tenant_id, row.resource_id, BUSY_SOURCE[Provider(row.provider)])
    await store.delete(connection, connection_id, tenant_id)
    log.info("calendars.disconnected", connection_id=str(connection_id), busy_blocks_removed=removed)


async def after_update(connection_id: UUID) -> None:
    await queue_sync(connection_id, full=True, forced=True)
    await queue_watch(connection_id)

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

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.calendars import keys, store
from nmc.calendars.google import GOOGLE, missing_scopes
from nmc.calendars.jobber import JOBBER, token_expiry
from nmc.calendars.models import Provider
from nmc.calendars.provider import AuthRevoked, CalendarProvider, Grant, ProviderError
from nmc.calendars.queueing import queue_sync, queue_watch, queue_write_back
from nmc.calendars.schemas import CalendarConnectionRead, CalendarConnectionUpdate, JobberUserMapping, JobberUserRead
from nmc.calendars.store import ConnectionRow
from nmc.db import raw_connection, session_scope
from nmc.observability.logging import mask_text
from nmc.problems import DomainError, InvalidField, NotFound
from nmc.scheduling import BusyBlockSource, clear_external_busy, resource_names
from nmc.settings import get_settings

log = structlog.get_logger(module="calendars")

T = TypeVar("T")
CALLBACK_PATH = "/oauth/google/callback"
REFRESH_MARGIN = timedelta(seconds=60)
PERSONAL_TOKEN_DAYS = 3650  # a personal Jobber token without `exp`: used until Jobber refuses it
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_BEARER = re.compile(r"(ya29\.|1//)[\w.-]+")

PROVIDERS: dict[str, CalendarProvider] = {Provider.GOOGLE: GOOGLE, Provider.JOBBER: JOBBER}
CALLBACK_PATHS = {Provider.GOOGLE: CALLBACK_PATH, Provider.JOBBER: "/oauth/jobber/callback"}
BUSY_SOURCE = {Provider.GOOGLE: BusyBlockSource.GOOGLE, Provider.JOBBER: BusyBlockSource.JOBBER}


def provider_for(name: str) -> CalendarProvider:
    return PROVIDERS[name]


def masked(error: BaseException | str) -> str:
    """An error as a connection shows it: no phone number, e-mail address or token, at most 500 characters."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = _BEARER.sub("[token]", _EMAIL.sub("[email]", mask_text(text)))
    return text[:500]


def redirect_uri(provider: str = Provider.GOOGLE) -> str:
    """The redirect URI to register on the provider's OAuth app (README)."""
    return get_settings().public_url(CALLBACK_PATHS[Provider(provider)])


# ---------------------------------------------------------------------------- tokens
class Tokens:
    """A connection's access token, refreshed before it expires (and once more on a 401)."""

    def __init__(self, row: ConnectionRow) -> None:
        self.row = row
        self.provider = provider_for(row.provider)
        self._access: str | None = None
        self._expires_at = row.access_token_expires_at
        self._seen = row.access_token_encrypted  # the stored access token this object knows of
        if row.access_token_encrypted and self._expires_at and self._expires_at - REFRESH_MARGIN > datetime.now(UTC):
            try:
                self._access = keys.decrypt(row.access_token_encrypted)
            except keys.Undecryptable:
                self._access = None

    async def refresh(self) -> str:
        """One refresher per connection at a time (an advisory lock, not the row's: webhooks and syncs
        update the row meanwhile). After the lock, the tokens are read again: when another refresher
        stored a new access token since ours was read, that one is used — our refresh token may be spent
        (Jobber rotates them). The new refresh token is stored in the same transaction as the access token."""
        async with session_scope() as session:
            connection = await raw_connection(session)
            current = await store.lock_tokens(connection, self.row.id)
            if current is None:
                raise AuthRevoked("the connection is gone")
            stored, expires_at = current["access_token_encrypted"], current["access_token_expires_at"]
            if (
                stored
                and stored != self._seen
                and expires_at is not None
                and expires_at - REFRESH_MARGIN > datetime.now(UTC)
            ):
                try:
                    self._access, self._expires_at, self._seen = keys.decrypt(stored), expires_at, stored
                    return self._access
                except keys.Undecryptable:
                    pass
            try:
                refresh_token = keys.decrypt(current["refresh_token_encrypted"])
            except keys.Undecryptable as exc:
                raise AuthRevoked(f"stored refresh token unreadable: {exc}") from None
            grant = await self.provider.refresh(refresh_token)
            self._seen = keys.encrypt(grant.access_token)
            await store.store_tokens(
                connection,
                self.row.id,
                self._seen,
                grant.expires_at,
                keys.encrypt(grant.refresh_token) if grant.refresh_token else None,
            )
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
    if provider == Provider.GOOGLE and (not settings.GOOGLE_CLIENT_ID or not settings.GOOGLE_CLIENT_SECRET):
        raise InvalidField("provider", "Google is not configured here (GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET)")
    if provider == Provider.JOBBER and (not settings.JOBBER_CLIENT_ID or not settings.JOBBER_CLIENT_SECRET):
        raise InvalidField("provider", "Jobber is not configured here (JOBBER_CLIENT_ID, JOBBER_CLIENT_SECRET)")
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
    return provider_for(provider).authorization_url(state, redirect_uri(provider))


class StateRefused(ValueError):
    """A callback whose `state` is forged, expired or used already: nothing is stored."""


@dataclass(frozen=True)
class ConnectOutcome:
    outcome: str  # connected | denied | missing_scope | no_refresh_token | failed | account_in_use
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
        grant = await provider.exchange_code(code, redirect_uri(claims.provider))
    except ProviderError as exc:
        log.warning("calendars.connect_failed", error=masked(exc), tenant_id=str(claims.tenant_id))
        return ConnectOutcome("failed", detail=masked(exc))
    if claims.provider == Provider.JOBBER:
        return await _store_jobber(connection, claims.tenant_id, claims.resource_id, claims.user_id, grant)
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


async def _store_jobber(
    connection: asyncpg.Connection, tenant_id: UUID, resource_id: UUID, user_id: str | None, grant: Grant
) -> ConnectOutcome:
    """A Jobber grant: its account (for webhook routing), one connection per tenant (a reconnect updates
    it, the user mapping stays), an account connected to one tenant only."""
    if grant.refresh_token is None:
        return ConnectOutcome("no_refresh_token", detail="Jobber sent no refresh token")
    try:
        account_id, _ = await JOBBER.account(grant.access_token)
    except ProviderError as exc:
        log.warning("calendars.connect_failed", error=masked(exc), tenant_id=str(tenant_id))
        return ConnectOutcome("failed", detail=masked(exc))
    return await store_jobber_connection(
        connection, tenant_id, resource_id, user_id, account_id, grant.access_token, grant.expires_at,
        grant.refresh_token,
    )  # fmt: skip


async def store_jobber_connection(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    resource_id: UUID,
    user_id: str | None,
    account_id: str,
    access_token: str,
    expires_at: datetime,
    refresh_token: str,
) -> ConnectOutcome:
    """Store (or renew) the tenant's Jobber connection; `refresh_token` "" for a personal token."""
    other = await store.jobber_of_account(connection, account_id)
    if other is not None and other.tenant_id != tenant_id:
        log.warning("calendars.jobber_account_in_use", tenant_id=str(tenant_id))
        return ConnectOutcome("account_in_use", detail="this Jobber account is connected to another business")
    existing = await store.jobber_of_tenant(connection, tenant_id)
    connection_id = await store.upsert(
        connection,
        id=uuid4(),
        tenant_id=tenant_id,
        resource_id=existing.resource_id if existing else resource_id,
        provider=Provider.JOBBER,
        calendar_id=account_id,
        connected_by=user_id,
        scopes="",
        refresh_token_encrypted=keys.encrypt(refresh_token),
        access_token_encrypted=keys.encrypt(access_token),
        access_token_expires_at=expires_at,
    )
    log.info("calendars.connected", provider=Provider.JOBBER, connection_id=str(connection_id))
    return ConnectOutcome("connected", connection_id=connection_id)


async def connect_jobber_token(tenant_id: UUID, resource_id: UUID, token: str) -> ConnectOutcome:
    """`just calendars-connect-jobber-token`: a business's personal token (JOBBER_API_TOKEN) as its Jobber
    connection, without OAuth. It cannot be refreshed: when Jobber refuses it, the connection needs
    re-auth (set a new token and run the command again)."""
    if not token:
        raise InvalidField("JOBBER_API_TOKEN", "empty: set the business's personal Jobber token")
    async with session_scope() as session:
        if resource_id not in await resource_names(session, tenant_id, [resource_id]):
            raise InvalidField("resource_id", "no such resource")
        try:
            account_id, _ = await JOBBER.account(token)
        except ProviderError as exc:
            raise InvalidField("JOBBER_API_TOKEN", f"Jobber did not accept it: {masked(exc)}") from None
        connection = await raw_connection(session)
        expires_at = token_expiry(token, PERSONAL_TOKEN_DAYS * 86400)
        outcome = await store_jobber_connection(
            connection, tenant_id, resource_id, "jobber-token", account_id, token, expires_at, ""
        )
    if outcome.connection_id is not None:
        await after_connect(outcome.connection_id)
    return outcome


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
    jobber = row.provider == Provider.JOBBER
    if jobber and calendar_id != row.calendar_id:
        raise InvalidField("calendar_id", "a Jobber connection is its account: connect the other account instead")
    if resource_id != row.resource_id and resource_id not in await resource_names(session, tenant_id, [resource_id]):
        raise InvalidField("resource_id", "no such resource")
    changed = (calendar_id, resource_id) != (row.calendar_id, row.resource_id)
    if changed:
        if resource_id != row.resource_id and await store.for_resource(
            connection, tenant_id, resource_id, row.provider
        ):
            raise InvalidField("resource_id", "that resource has a calendar of this provider already")
        if not jobber:  # a Jobber connection's blocks are its mapped users' (jobber-users), not its resource's
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
    source = BUSY_SOURCE[Provider(row.provider)]
    resources = {row.resource_id} | {u.resource_id for u in await store.jobber_users(connection, connection_id)}
    removed = 0
    for resource_id in resources:
        removed += await clear_external_busy(session, tenant_id, resource_id, source)
    await store.delete(connection, connection_id, tenant_id)
    log.info("calendars.disconnected", connection_id=str(connection_id), busy_blocks_removed=removed)


async def after_update(connection_id: UUID) -> None:
    await queue_sync(connection_id, full=True, forced=True)
    await queue_watch(connection_id)


# ---------------------------------------------------------------------------- Jobber users → resources
class JobberUnreachable(DomainError):
    """Jobber did not answer the users list (down, throttled, or the grant is gone)."""

    status_code = 502
    title = "Bad gateway"


async def _jobber_row(session: AsyncSession, tenant_id: UUID, connection_id: UUID) -> ConnectionRow:
    row = await store.get(await raw_connection(session), connection_id, tenant_id)
    if row is None or row.provider != Provider.JOBBER:
        raise NotFound("Jobber connection")
    return row


async def _live_jobber_users(row: ConnectionRow) -> list[dict[str, str]]:
    try:
        return await Tokens(row).call(JOBBER.users)
    except (ProviderError, keys.Undecryptable) as exc:
        log.warning("calendars.jobber_users_failed", connection_id=str(row.id), error=masked(exc))
        raise JobberUnreachable(f"Jobber did not list its users: {masked(exc)}") from None


async def list_jobber_users(session: AsyncSession, tenant_id: UUID, connection_id: UUID) -> list[JobberUserRead]:
    """The account's users as Jobber lists them now, each with the resource it is mapped to (or None)."""
    row = await _jobber_row(session, tenant_id, connection_id)
    mapped = {u.jobber_user_id: u.resource_id for u in await store.jobber_users(await raw_connection(session), row.id)}
    return [
        JobberUserRead(id=u["id"], name=u["name"], email=u["email"] or None, resource_id=mapped.get(u["id"]))
        for u in await _live_jobber_users(row)
    ]


async def map_jobber_users(
    session: AsyncSession, tenant_id: UUID, connection_id: UUID, data: JobberUserMapping
) -> tuple[list[JobberUserRead], bool]:
    """Store the mapping (each user to a resource of the tenant, or None to unmap); a resource that lost
    its last mapped user loses its Jobber blocks now. Returns the users and whether anything changed (the
    caller queues a full sync after the commit)."""
    row = await _jobber_row(session, tenant_id, connection_id)
    connection = await raw_connection(session)
    wanted = [m.resource_id for m in data.mappings if m.resource_id is not None]
    known = await resource_names(session, tenant_id, wanted)
    for index, mapping in enumerate(data.mappings):
        if mapping.resource_id is not None and mapping.resource_id not in known:
            raise InvalidField(f"mappings[{index}].resource_id", "no such resource")
    users = {u["id"]: u for u in await _live_jobber_users(row)}
    for index, mapping in enumerate(data.mappings):
        if mapping.jobber_user_id not in users:
            raise InvalidField(f"mappings[{index}].jobber_user_id", "no such user in the Jobber account")
    before = {u.jobber_user_id: u.resource_id for u in await store.jobber_users(connection, row.id)}
    for mapping in data.mappings:
        name = users[mapping.jobber_user_id]["name"] or None
        await store.map_jobber_user(connection, row.id, tenant_id, mapping.jobber_user_id, mapping.resource_id, name)
    after = {u.jobber_user_id: u.resource_id for u in await store.jobber_users(connection, row.id)}
    for resource_id in set(before.values()) - set(after.values()):
        await clear_external_busy(session, tenant_id, resource_id, BusyBlockSource.JOBBER)
    return [
        JobberUserRead(id=u["id"], name=u["name"], email=u["email"] or None, resource_id=after.get(u["id"]))
        for u in users.values()
    ], before != after

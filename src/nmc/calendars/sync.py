"""Busy time in: full and incremental syncs, push channels, the poll tick. All of it runs in the jobs
process (Dramatiq actors in `jobs/calendars.py`), never in the worker's first-SMS slots.

A sync reads every page first and applies them in one transaction with the new cursor (`nextSyncToken`
comes with the last page only): a crash mid-sync leaves the previous state. A full sync replaces the
connection's blocks; an incremental one upserts and deletes what changed. 410 (`fullSyncRequired`)
turns into a full sync at once. The window moves with time, so a calendar is fully synced again once a
day. One sync per connection at a time (a lease on the row); a burst of notifications coalesces into
the sync that starts next (the request flag is cleared as it starts), and a change that arrives while
a sync runs makes it run once more.

Failures: 401 / `invalid_grant` → `needs_reauth` (not polled, blocks kept, the owner told once through
`calendar.needs_reauth`); 403 rate limits, 429, 5xx, timeouts → the next poll is pushed back
exponentially with jitter; a calendar that refuses us otherwise (404, 403 forbidden) → `error`. Every
failure counts in `calendar_sync_errors_total{provider}` and is logged with tenant, connection and
correlation id.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.calendars import keys, store
from nmc.calendars.jobber import THROTTLED
from nmc.calendars.metrics import SYNC_ERRORS, count
from nmc.calendars.models import PROVIDERS, ConnectionStatus, Provider
from nmc.calendars.provider import (
    AuthRevoked,
    Change,
    FullSyncRequired,
    ProviderError,
    RateLimited,
    Refused,
    SyncResult,
    Window,
)
from nmc.calendars.queueing import queue_sync, queue_watch
from nmc.calendars.service import BUSY_SOURCE, Tokens, masked, provider_for, stop_channel
from nmc.calendars.store import ConnectionRow
from nmc.db import raw_connection, session_scope
from nmc.events import CalendarNeedsReauth, publish_on
from nmc.observability.correlation import current_correlation_id
from nmc.scheduling import ExternalBusy, delete_external_busy, replace_external_busy, upsert_external_busy
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="calendars")

LEASE_SECONDS = 300.0
FULL_SYNC_EVERY = timedelta(days=1)  # the window slides: events that entered it unchanged come in
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 3600.0
MAX_RUNS_PER_JOB = 3  # a change that arrived during a sync: run again, a few times at most
WEBHOOK_PATH = "/webhooks/google/calendar"
WATCH_RETRY_SECONDS = 3600.0
TICK_BATCH = 500
FULL_SYNCS_AT_ONCE = 1
ITEM_BUSY_RETRY_MS = 5000


@dataclass
class SyncReport:
    connection_id: UUID
    outcome: str  # synced | skipped | needs_reauth | error | retry | deferred (throttled, not a failure)
    mode: str | None = None  # full | incremental | item
    pages: int = 0
    events: int = 0
    blocks_changed: int = 0
    blocks_deleted: int = 0
    error: str | None = None

    def line(self) -> str:
        if self.outcome != "synced":
            return f"{self.connection_id}: {self.outcome}" + (f" ({self.error})" if self.error else "")
        return (
            f"{self.connection_id}: {self.mode} sync, {self.events} events in {self.pages} page(s): "
            f"{self.blocks_changed} busy block(s) written, {self.blocks_deleted} removed"
        )


def poll_interval(provider: str, settings: Settings) -> float:
    return float(
        settings.POLL_INTERVAL_GOOGLE_SECONDS if provider == Provider.GOOGLE else settings.POLL_INTERVAL_JOBBER_SECONDS
    )


def next_poll_in(provider: str, settings: Settings) -> float:
    """Spread over [0.75, 1.0] of the interval (±25% by the book, but never later than one interval)."""
    return poll_interval(provider, settings) * random.uniform(0.75, 1.0)


def backoff_seconds(failures: int) -> float:
    """Truncated exponential backoff with full jitter over its upper half."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, failures))
    return random.uniform(ceiling / 2, ceiling)


def window(settings: Settings, now: datetime | None = None) -> Window:
    now = now or datetime.now(UTC)
    return Window(
        start=now - timedelta(days=settings.CALENDAR_SYNC_PAST_DAYS),
        end=now + timedelta(days=settings.CALENDAR_SYNC_FUTURE_DAYS),
    )


# ---------------------------------------------------------------------------- sync
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _full_sync_slot() -> asyncio.Semaphore:
    """At most FULL_SYNCS_AT_ONCE full syncs run at a time in a process (per event loop): a burst of them (a
    deploy of many connections, the daily resync, a 410 storm) takes turns instead of taking both cores
    from the first SMS (`just bench calendars-first-sms`). Incremental syncs — what push notifications
    and polls bring — never wait for it, so a slow calendar's full sync delays only other full syncs."""
    loop = asyncio.get_running_loop()
    slot = _slots.get(loop)
    if slot is None:
        slot = _slots[loop] = asyncio.Semaphore(FULL_SYNCS_AT_ONCE)
    return slot


def _needs_full(row: ConnectionRow | None, full: bool) -> bool:
    return (
        full
        or row is None
        or row.sync_token is None
        or row.last_full_sync_at is None
        or (datetime.now(UTC) - row.last_full_sync_at > FULL_SYNC_EVERY)
    )


async def run_sync(connection_id: UUID, *, full: bool = False, forced: bool = False) -> SyncReport:
    """One job: sync, and again while changes arrived meanwhile (a few times at most)."""
    report = await sync_once(connection_id, full=full, forced=forced)
    for _ in range(MAX_RUNS_PER_JOB - 1):
        if report.outcome != "synced":
            break
        async with session_scope() as session:
            again = await store.sync_requested(await raw_connection(session), connection_id)
        if not again:
            break
        report = await sync_once(connection_id)
    return report


async def sync_once(connection_id: UUID, *, full: bool = False, forced: bool = False) -> SyncReport:
    """A full sync takes its turn first (before its lease starts running); an incremental one goes at once."""
    async with session_scope() as session:
        current = await store.get(await raw_connection(session), connection_id)
    if not _needs_full(current, full):
        return await _sync_claimed(connection_id, full, forced)
    async with _full_sync_slot():
        return await _sync_claimed(connection_id, full, forced)


async def _sync_claimed(connection_id: UUID, full: bool, forced: bool) -> SyncReport:
    settings = get_settings()
    async with session_scope() as session:
        row = await store.claim_for_sync(await raw_connection(session), connection_id, LEASE_SECONDS, forced)
    if row is None:
        return SyncReport(connection_id, "skipped")
    structlog.contextvars.bind_contextvars(tenant_id=str(row.tenant_id), connection_id=str(row.id))
    provider = provider_for(row.provider)
    tokens = Tokens(row)
    zone = ZoneInfo(row.timezone)
    full = _needs_full(row, full)
    try:
        if full:
            result = await tokens.call(lambda t: provider.full_sync(t, row.calendar_id, window(settings), zone))
        else:
            assert row.sync_token is not None
            try:
                result = await tokens.call(
                    lambda t: provider.incremental_sync(t, row.calendar_id, row.sync_token or "", zone)
                )
            except FullSyncRequired:
                log.info("calendars.full_sync_required", connection_id=str(row.id))
                full = True
                result = await tokens.call(lambda t: provider.full_sync(t, row.calendar_id, window(settings), zone))
        report = await _apply(row, result, full, settings)
    except Exception as exc:
        return await _failed(row, exc)
    log.info(
        "calendars.synced",
        connection_id=str(row.id),
        mode=report.mode,
        events=report.events,
        pages=report.pages,
        changed=report.blocks_changed,
        deleted=report.blocks_deleted,
    )
    return report


async def _apply(row: ConnectionRow, result: SyncResult, full: bool, settings: Settings) -> SyncReport:
    """Every change and the cursor in one transaction, while the lease is ours."""
    source = BUSY_SOURCE[Provider(row.provider)]
    busy = [_block(c) for c in result.changes if c.busy]
    report = SyncReport(row.id, "synced", mode="full" if full else "incremental", pages=result.pages,
                        events=len(result.changes))  # fmt: skip
    async with session_scope() as session:
        connection = await raw_connection(session)
        if result.whole_window:
            report.blocks_changed, report.blocks_deleted = await _replace_by_owner(session, row, result.changes)
        elif full:
            report.blocks_changed, report.blocks_deleted = await replace_external_busy(
                session, row.tenant_id, row.resource_id, source, busy
            )
        else:
            gone = [c for c in result.changes if not c.busy]
            busy_ids = {b.external_id for b in busy}
            report.blocks_deleted = await delete_external_busy(
                session,
                row.tenant_id,
                row.resource_id,
                source,
                [c.external_id for c in gone if c.external_id not in busy_ids],
                prefixes=[f"{c.external_id}_" for c in gone if c.series],
            )
            report.blocks_changed = await upsert_external_busy(session, row.tenant_id, row.resource_id, source, busy)
        lease = await connection.fetchval(
            "SELECT sync_lease_until FROM calendar_connections WHERE id = $1 FOR UPDATE", row.id
        )
        if lease != row.sync_lease_until or not await store.record_synced(
            connection, row.id, lease, result.cursor, full, next_poll_in(row.provider, settings)
        ):
            raise LeaseLost("the sync lease ran out or the connection changed; nothing applied")
    return report


async def _owner_resources(session: AsyncSession, row: ConnectionRow) -> dict[str, UUID]:
    """The provider's users → our resources (Jobber's mapping); unmapped users block nothing."""
    users = await store.jobber_users(await raw_connection(session), row.id)
    return {u.jobber_user_id: u.resource_id for u in users}


async def _replace_by_owner(session: AsyncSession, row: ConnectionRow, changes: list[Change]) -> tuple[int, int]:
    """A window re-pull (Jobber): every mapped resource's blocks of the source become exactly the busy
    visits of its users — what is absent from the window, or free now (moved out, deleted, completed,
    cancelled, unscheduled), goes. Returns (changed, deleted)."""
    owners = await _owner_resources(session, row)
    wanted: dict[UUID, dict[str, ExternalBusy]] = {resource_id: {} for resource_id in owners.values()}
    for change in changes:
        if not change.busy:
            continue
        for owner in change.owners:
            if owner in owners:
                wanted[owners[owner]][change.external_id] = _block(change)
    changed = deleted = 0
    source = BUSY_SOURCE[Provider(row.provider)]
    for resource_id, blocks in wanted.items():
        c, d = await replace_external_busy(session, row.tenant_id, resource_id, source, list(blocks.values()))
        changed, deleted = changed + c, deleted + d
    return changed, deleted


async def _apply_item(session: AsyncSession, row: ConnectionRow, change: Change) -> tuple[int, int]:
    """One visit as the provider has it now: its blocks leave every mapped resource, then come back on its
    users' resources if it is busy time within the synced window."""
    owners = await _owner_resources(session, row)
    source = BUSY_SOURCE[Provider(row.provider)]
    synced = window(get_settings())
    if change.start is not None and not synced.start <= change.start <= synced.end:
        change = Change(change.external_id, busy=False)  # as the window's re-pull would leave it: not held
    deleted = 0
    for resource_id in set(owners.values()):
        deleted += await delete_external_busy(session, row.tenant_id, resource_id, source, [change.external_id])
    changed = 0
    if change.busy:
        for resource_id in {owners[o] for o in change.owners if o in owners}:
            changed += await upsert_external_busy(session, row.tenant_id, resource_id, source, [_block(change)])
    return changed, deleted


async def run_item(connection_id: UUID, item_id: str) -> SyncReport:
    """A webhook's item re-queried in the jobs process (Jobber's payloads carry ids only): applied as the
    provider has it now, so deliveries out of order end in the current state. Under the sync lease; while
    a sync runs, the item waits for the next one (the request flag makes that sync run again)."""
    async with session_scope() as session:
        connection = await raw_connection(session)
        row = await store.claim_for_sync(connection, connection_id, LEASE_SECONDS, True)
        if row is None:  # a sync (or another item) runs: a sync after it brings this item too
            if await store.request_sync(connection, connection_id, 0.0):
                await queue_sync(connection_id, delay_ms=ITEM_BUSY_RETRY_MS)
            return SyncReport(connection_id, "skipped")
    structlog.contextvars.bind_contextvars(tenant_id=str(row.tenant_id), connection_id=str(row.id))
    provider = provider_for(row.provider)
    fetch = getattr(provider, "visit", None)
    if fetch is None:
        async with session_scope() as session:
            await store.release_lease(await raw_connection(session), row.id)
        return SyncReport(connection_id, "skipped")
    try:
        change = await Tokens(row).call(lambda t: fetch(t, item_id, ZoneInfo(row.timezone)))
        async with session_scope() as session:
            changed, deleted = await _apply_item(session, row, change)
            await store.release_lease(await raw_connection(session), row.id)
    except Exception as exc:
        return await _failed(row, exc)
    log.info("calendars.item_synced", connection_id=str(row.id), item_id=item_id, busy=change.busy,
             changed=changed, deleted=deleted)  # fmt: skip
    return SyncReport(row.id, "synced", mode="item", events=1, blocks_changed=changed, blocks_deleted=deleted)


class LeaseLost(RuntimeError):
    """Another sync of the connection took over: this one's changes are rolled back."""


def _block(change: Change) -> ExternalBusy:
    assert change.start is not None
    assert change.end is not None
    return ExternalBusy(change.external_id, change.start, change.end, change.title)


async def _failed(row: ConnectionRow, exc: BaseException) -> SyncReport:
    """Record, count and log a failed sync; what happens next depends on whose fault it was."""
    error = masked(exc)
    common = {"connection_id": str(row.id), "provider": row.provider, "error": error}
    if isinstance(exc, RateLimited) and exc.reason == THROTTLED:
        # The provider's cost bucket is low (Jobber): not a failure; the sync runs again once it refilled,
        # without holding a jobs slot meanwhile.
        delay = max(1.0, exc.retry_after or 1.0)
        async with session_scope() as session:
            await store.defer_sync(await raw_connection(session), row.id, delay)
        await queue_sync(row.id, delay_ms=int(delay * 1000))
        log.info("calendars.sync_deferred", connection_id=str(row.id), provider=row.provider, retry_in=round(delay, 1))
        return SyncReport(row.id, "deferred", error=error)
    await count(SYNC_ERRORS, row.provider)
    if isinstance(exc, AuthRevoked | keys.Undecryptable):
        await mark_needs_reauth(row, error)
        log.warning("calendars.needs_reauth", **common)
        return SyncReport(row.id, "needs_reauth", error=error)
    async with session_scope() as session:
        connection = await raw_connection(session)
        if isinstance(exc, Refused):
            await store.record_failed(connection, row.id, error, poll_interval(row.provider, get_settings()),
                                      ConnectionStatus.ERROR)  # fmt: skip
            log.warning("calendars.sync_refused", **common)
            return SyncReport(row.id, "error", error=error)
        delay = backoff_seconds(row.consecutive_failures)
        if isinstance(exc, RateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        await store.record_failed(connection, row.id, error, delay)
    unexpected = not isinstance(exc, ProviderError | LeaseLost)
    log.warning("calendars.sync_failed", retry_in=round(delay, 1), exc_info=unexpected, **common)
    return SyncReport(row.id, "retry", error=error)


async def mark_needs_reauth(row: ConnectionRow, error: str) -> None:
    """Stop polling it, keep its blocks, tell the owner once (`calendar.needs_reauth`; conversations texts)."""
    async with session_scope() as session:
        await needs_reauth_on(await raw_connection(session), row, error)


async def needs_reauth_on(connection: asyncpg.Connection, row: ConnectionRow, error: str) -> None:
    """`mark_needs_reauth` inside the caller's transaction (a Jobber APP_DISCONNECT webhook)."""
    await store.record_failed(
        connection, row.id, error, poll_interval(row.provider, get_settings()), ConnectionStatus.NEEDS_REAUTH
    )
    if await store.claim_reauth_notice(connection, row.id):
        await publish_on(
            connection,
            CalendarNeedsReauth(
                tenant_id=row.tenant_id,
                connection_id=row.id,
                resource_id=row.resource_id,
                provider=row.provider,
                correlation_id=current_correlation_id(),
            ),
        )


# ---------------------------------------------------------------------------- push channels
def renew_before(settings: Settings) -> float:
    """Renew a channel this long before it expires: two days, or half a short channel's life."""
    return min(2 * 86400.0, settings.GOOGLE_WATCH_TTL_SECONDS / 2)


async def run_watch(connection_id: UUID) -> str:
    """Open a new channel, then stop the connection's older ones (a channel cannot be renewed in place,
    and notifications overlap meanwhile: both are accepted until the old one is stopped)."""
    settings = get_settings()
    async with session_scope() as session:
        row = await store.get(await raw_connection(session), connection_id)
    if row is None or row.status != ConnectionStatus.ACTIVE:
        return "skipped"
    if row.provider == Provider.JOBBER:  # Jobber's webhooks are app-wide: no channel to open
        return "unsupported"
    provider = provider_for(row.provider)
    tokens = Tokens(row)
    channel_id = uuid4().hex
    try:
        opened = await tokens.call(
            lambda t: provider.watch(
                t,
                row.calendar_id,
                channel_id,
                keys.channel_token(channel_id),
                settings.public_url(WEBHOOK_PATH),
                settings.GOOGLE_WATCH_TTL_SECONDS,
            )
        )
    except AuthRevoked as exc:
        await count(SYNC_ERRORS, row.provider)
        await mark_needs_reauth(row, masked(exc))
        return "needs_reauth"
    except ProviderError as exc:
        async with session_scope() as session:
            await store.watch_failed(await raw_connection(session), row.id, masked(exc))
        log.warning("calendars.watch_failed", connection_id=str(row.id), error=masked(exc))
        return "failed"
    if opened is None:  # a provider without per-calendar channels (Jobber's webhooks are app-wide)
        return "unsupported"
    async with session_scope() as session:
        connection = await raw_connection(session)
        await store.add_channel(connection, channel_id, row.id, row.tenant_id, opened.resource_id, opened.expires_at)
        older = [c for c in await store.channels(connection, row.id) if c.id != channel_id and c.stopped_at is None]
    for channel in older:
        try:
            await stop_channel(tokens, channel.id, channel.resource_id)
        except ProviderError as exc:
            log.warning("calendars.stop_failed", connection_id=str(row.id), error=masked(exc))
            continue
        async with session_scope() as session:
            await store.mark_stopped(await raw_connection(session), [channel.id])
    log.info("calendars.watching", connection_id=str(row.id), expires_at=opened.expires_at.isoformat())
    return "watching"


# ---------------------------------------------------------------------------- the poll tick
async def poll_tick() -> dict[str, int]:
    """Queue a sync for every connection due (not synced within its interval), a channel for every
    connection whose channel expires soon; forget old channels and used-up states."""
    settings = get_settings()
    queued = watched = 0
    async with session_scope() as session:
        connection = await raw_connection(session)
        requested: list[UUID] = []
        for provider in PROVIDERS:
            due = await store.due_for_poll(connection, provider, TICK_BATCH)
            # A request older than one interval did not lead to a sync (a job lost, or one that found the
            # connection backing off): the tick queues another.
            stale = poll_interval(provider, settings)
            requested += [c for c in due if await store.request_sync(connection, c, stale)]
        to_watch = await store.due_for_watch(
            connection, Provider.GOOGLE, renew_before(settings), WATCH_RETRY_SECONDS, TICK_BATCH
        )
        await store.forget_old_channels(connection)
    for connection_id in requested:
        await queue_sync(connection_id)
        queued += 1
    for connection_id in to_watch:
        await queue_watch(connection_id)
        watched += 1
    if queued or watched:
        log.info("calendars.poll_tick", syncs=queued, channels=watched)
    return {"syncs": queued, "channels": watched}


def new_channel_id() -> str:
    return secrets.token_hex(16)

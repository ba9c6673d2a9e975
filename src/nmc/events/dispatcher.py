"""At-least-once dispatch of outbox rows to their subscribers (runs in the worker).

One PgQueuer job per row wakes a dispatcher; the row itself is the source of truth:
- claim: `attempts + 1` and a lease on `available_at`, so a sweeper never re-sends a row in flight;
- success: `dispatched_at` — in the last handler's own final transaction when it settles the event
  (`nmc.events.settling`; the first SMS does, in the transaction recording Twilio's acceptance: one
  commit fewer per text), otherwise by the dispatcher once every handler returned;
- failure: `last_error` and `available_at` pushed out with exponential backoff and jitter,
  then a retry job; past `OUTBOX_MAX_ATTEMPTS` (or on a `PermanentFailure`) the row moves intact
  to `outbox_events_errors`.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
import structlog
from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import ASYNC_COMMIT, hot_pool, raw_connection, session_scope
from nmc.events.catalog import UnknownEvent, load_event
from nmc.events.models import OutboxEvent, OutboxEventError
from nmc.events.outbox import enqueue_dispatch, enqueue_dispatches
from nmc.events.settling import MARK_DISPATCHED, Settling, run_handler
from nmc.events.subscribers import handlers_for, subscribed_event_names
from nmc.observability.correlation import use_correlation_id
from nmc.observability.logging import bind_event_context, mask_text
from nmc.settings import get_settings

log = structlog.get_logger(module="events")

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 600.0
SWEEP_LIMIT = 500


class PermanentFailure(Exception):
    """A handler's verdict that retrying cannot help: park the event for a human."""


class Deferred(Exception):
    """A handler's verdict that the work must wait (quiet hours, paused sending) — not a failure."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(f"deferred until {until.isoformat()}: {reason}")
        self.until = until
        self.reason = reason


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with jitter: attempt n waits between half and all of min(2^(n-1) s, 10 min)."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


async def dispatch(event_id: UUID) -> None:
    row = await _claim(event_id)
    if row is None:
        return  # dispatched already, parked, or leased by another dispatcher
    # The handler continues the event's correlation chain: what it publishes carries the same id.
    use_correlation_id(row["correlation_id"])
    bind_event_context(event_name=row["event_name"], tenant_id=row["tenant_id"])
    try:
        event = load_event(row["event_name"], row["event_version"], row["payload"])
    except (UnknownEvent, msgspec.ValidationError) as exc:
        await _park(event_id, f"catalog: {exc}")
        return
    handlers = handlers_for(row["event_name"])
    settling = Settling(event_id)
    try:
        for index, handler in enumerate(handlers):
            await run_handler(handler, event, settling if index == len(handlers) - 1 else None)
    except Deferred as verdict:
        await _defer(event_id, verdict)
    except PermanentFailure as exc:
        await _park(event_id, _describe(exc))
    except Exception as exc:
        log.warning("outbox.dispatch_failed", attempts=row["attempts"], error=_describe(exc))
        await _fail(event_id, row["attempts"], _describe(exc))
    else:
        if not settling.settled:
            await _mark_dispatched(event_id)


# This process's identity in `worker_heartbeats` (set by the worker at start; a process that never
# beats, e.g. a test, holds its claims for the whole lease).
_dispatcher_id: UUID = uuid4()
HEARTBEAT_STALE_SECONDS = 5  # a worker silent this long is dead: its claims are taken over


def set_dispatcher_id(worker_id: UUID) -> None:
    global _dispatcher_id
    _dispatcher_id = worker_id


# Claim and completion run once per event on the first-SMS path: single statements on the hot pool.
# A row is claimable when due, or when the worker holding its lease has stopped beating. The claim's
# commit does not wait for the disk (ADR 0021): a claim a database crash loses leaves the row due, and
# whatever a handler does outside the database comes after a synchronous commit of its own.
_CLAIM = f"""
    WITH {ASYNC_COMMIT}
    UPDATE outbox_events e
    SET attempts = attempts + 1, available_at = now() + make_interval(secs => $2), claimed_by = $3
    FROM async_commit
    WHERE id = $1 AND dispatched_at IS NULL
      AND (available_at <= now() OR (claimed_by IS NOT NULL AND claimed_by <> $3 AND NOT EXISTS (
          SELECT 1 FROM worker_heartbeats h
          WHERE h.worker_id = e.claimed_by AND h.beat_at > now() - interval '{HEARTBEAT_STALE_SECONDS} seconds')))
    RETURNING event_name, event_version, payload, attempts, correlation_id, tenant_id
"""


async def _claim(event_id: UUID) -> dict[str, Any] | None:
    pool = await hot_pool()
    found = await pool.fetchrow(_CLAIM, event_id, float(get_settings().OUTBOX_LEASE_SECONDS), _dispatcher_id)
    return dict(found) if found else None


async def _mark_dispatched(event_id: UUID) -> None:
    await (await hot_pool()).execute(MARK_DISPATCHED, event_id)


async def _fail(event_id: UUID, attempts: int, error: str) -> None:
    if attempts >= get_settings().OUTBOX_MAX_ATTEMPTS:
        await _park(event_id, error)
        return
    until = datetime.now(UTC) + backoff(attempts)
    await _reschedule(event_id, until, error, refund_attempt=False, key_suffix=f":retry{attempts}")


def deferral_note(reason: str) -> str:
    return f"deferred: {reason}"


async def _defer(event_id: UUID, verdict: Deferred) -> None:
    """Wait without spending an attempt; the retry job (or the sweeper) picks it up when due."""
    suffix = f":deferred:{int(verdict.until.timestamp())}"
    await _reschedule(event_id, verdict.until, deferral_note(verdict.reason), refund_attempt=True, key_suffix=suffix)


async def _reschedule(event_id: UUID, until: datetime, note: str, *, refund_attempt: bool, key_suffix: str) -> None:
    """Push the row's `available_at` to `until` with `note` as `last_error`, and enqueue its job for then."""
    now = datetime.now(UTC)
    until = max(until, now)
    async with session_scope() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == event_id)
            .values(attempts=OutboxEvent.attempts - int(refund_attempt), last_error=note, available_at=until)
        )
        await enqueue_dispatch(await raw_connection(session), event_id, key_suffix=key_suffix, after=until - now)


async def release_deferred(reason: str) -> int:
    """Make events deferred for `reason` due now (e.g. PAUSE_OUTBOUND_SMS turned off at start, an
    operator's resume) and enqueue their dispatch: the commit's NOTIFY wakes a worker at once, not the
    next sweep (up to 2 s later)."""
    async with session_scope() as session:
        result = await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.dispatched_at.is_(None), OutboxEvent.last_error == deferral_note(reason))
            .values(available_at=func.now())
            .returning(OutboxEvent.id)
        )
        released = list(result.scalars())
        await enqueue_dispatches(await raw_connection(session), released)
        return len(released)


async def _park(event_id: UUID, error: str) -> None:
    """Move the row intact (plus `last_error`) to `outbox_events_errors` (runbook §7.2)."""
    log.error("outbox.parked", error=error)
    async with session_scope() as session:
        await move_rows(session, "outbox_events", "outbox_events_errors", [event_id])
        await session.execute(update(OutboxEventError).where(OutboxEventError.id == event_id).values(last_error=error))


_OUTBOX_COLUMNS = ", ".join(column.name for column in OutboxEvent.__table__.columns)


async def move_rows(session: AsyncSession, source: str, target: str, event_ids: list[UUID]) -> list[UUID]:
    """Copy outbox rows between `outbox_events` and `outbox_events_errors` intact, then delete them
    from the source. Returns the ids moved."""
    assert {source, target} == {OutboxEvent.__tablename__, OutboxEventError.__tablename__}
    moved = await session.execute(
        text(
            f"INSERT INTO {target} ({_OUTBOX_COLUMNS}) SELECT {_OUTBOX_COLUMNS} FROM {source} "
            "WHERE id = ANY(:ids) RETURNING id"
        ),
        {"ids": event_ids},
    )
    ids = list(moved.scalars())
    await session.execute(text(f"DELETE FROM {source} WHERE id = ANY(:ids)"), {"ids": ids})
    return ids


# Due rows of events no subscriber handles here (published without a job, see `wake_worker`, or
# published before their subscriber existed): settled in one statement, not one job each.
_SETTLE_UNHANDLED = """
    UPDATE outbox_events SET dispatched_at = now()
    WHERE dispatched_at IS NULL AND available_at <= now() AND event_name <> ALL($1::text[])
"""


# Rows held by a worker that stopped beating: their job died with it (PgQueuer would retry it only
# after its own heartbeat timeout), so they get a job of their own now.
_ORPHANED = f"""
    SELECT e.id, e.claimed_by FROM outbox_events e
    WHERE e.dispatched_at IS NULL AND e.available_at > now() AND e.claimed_by IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM worker_heartbeats h WHERE h.worker_id = e.claimed_by
                      AND h.beat_at > now() - interval '{HEARTBEAT_STALE_SECONDS} seconds')
    LIMIT {SWEEP_LIMIT}
"""


async def sweep() -> int:
    """Settle due rows nobody handles; re-enqueue rows whose job was lost (crash, lease expired,
    backoff due) or whose worker died. Returns how many were re-enqueued."""
    async with session_scope() as session:
        connection = await raw_connection(session)
        await connection.execute(_SETTLE_UNHANDLED, subscribed_event_names())
        due = await session.execute(
            text(
                "SELECT id FROM outbox_events WHERE dispatched_at IS NULL AND available_at <= now() "
                "ORDER BY available_at LIMIT :limit"
            ),
            {"limit": SWEEP_LIMIT},
        )
        ids = list(due.scalars())
        await enqueue_dispatches(connection, ids)
        orphaned = await connection.fetch(_ORPHANED)
        # each with its dead worker's id in the key: apart from the dead worker's own picked job
        reclaims = [f":reclaim:{row['claimed_by']}" for row in orphaned]
        await enqueue_dispatches(connection, [row["id"] for row in orphaned], reclaims)
    if orphaned:
        log.warning("outbox.reclaimed_from_dead_worker", count=len(orphaned))
    return len(ids) + len(orphaned)


def _describe(exc: BaseException) -> str:
    """An error for `last_error` and logs: phone numbers masked, bounded length."""
    return mask_text(f"{type(exc).__name__}: {exc}")[:2000]

"""Bookings out: each booking's event in the calendar of its resource's connection, kept in step.

`booking.confirmed`, `booking.rescheduled` and `booking.cancelled` are outbox subscribers (`handlers.py`)
that only queue `write_back(tenant, booking)` for the jobs process. The job does not replay the event: it
reads the booking as it is now and makes the calendars agree — the event written (insert under the id
derived from the booking's, a 409 patched) or patched where the booking's resource has a connection,
deleted (404/410 are done) wherever it was written before and should no longer be (cancelled, moved to
another resource). So retries, redeliveries and events handled out of order all end in the same state.

A failure is recorded on the link (`failed`, with its masked error) and on the connection (`last_error`,
`failed_write_backs` in `GET /api/calendars`), counted in `calendar_sync_errors_total`, and raised for
Dramatiq to retry with exponential backoff; a lost grant is not retried (reconnecting replays the
failed write-backs).
"""

from __future__ import annotations

from uuid import UUID

import asyncpg
import structlog

from nmc.calendars import store
from nmc.calendars.google import event_id_for
from nmc.calendars.metrics import SYNC_ERRORS, count
from nmc.calendars.models import ConnectionStatus, Provider
from nmc.calendars.provider import AuthRevoked, BookingEvent, ProviderError
from nmc.calendars.service import Tokens, masked, provider_for
from nmc.calendars.store import ConnectionRow
from nmc.calendars.sync import mark_needs_reauth
from nmc.db import raw_connection, session_scope
from nmc.problems import NotFound
from nmc.scheduling import BookingRead, BookingStatus, JobTypeService, get_booking

log = structlog.get_logger(module="calendars")

WRITTEN, DELETED, FAILED = "written", "deleted", "failed"


class WriteBackFailed(RuntimeError):
    """Some calendar did not take the change; Dramatiq retries the job (the others are done already)."""


def booking_event(booking: BookingRead, job_type: str, zone: str) -> BookingEvent:
    """Title with the job type and the customer's first name; description with phone and notes."""
    first_name = (
        (booking.customer_name or "").split()[0] if booking.customer_name and booking.customer_name.split() else ""
    )
    title = f"{job_type} - {first_name}" if first_name else job_type
    lines = [f"Phone: {booking.customer_phone}"] if booking.customer_phone else []
    if booking.notes:
        lines.append(f"Notes: {booking.notes}")
    lines.append(f"Booked through NeverMissCall (booking {booking.id})")
    return BookingEvent(
        booking_id=booking.id,
        start=booking.start,
        end=booking.end,
        zone=zone,
        title=title[:200],
        description="\n".join(lines),
        customer_phone=booking.customer_phone,
        customer_name=booking.customer_name,
    )


async def write_back(tenant_id: UUID, booking_id: UUID) -> list[str]:
    """Make every calendar agree with the booking; returns what was done (one line per calendar)."""
    async with session_scope() as session:
        connection = await raw_connection(session)
        try:
            booking = await get_booking(session, tenant_id, booking_id)
        except NotFound:
            booking = None
        links = {link.connection_id: link for link in await store.links(connection, booking_id)}
        targets: list[tuple[ConnectionRow, str]] = []
        if booking is not None and booking.status == BookingStatus.CONFIRMED:
            targets = await _targets(connection, tenant_id, booking.resource_id)
        target_ids = {row.id for row, _ in targets}
        stale = [await store.get(connection, cid) for cid, link in links.items()
                 if link.state != DELETED and cid not in target_ids]  # fmt: skip
        job_type = ""
        if targets and booking is not None:
            job_type = (await JobTypeService(session=session).get_for(tenant_id, booking.job_type_id)).name
    done: list[str] = []
    failures: list[str] = []
    for row in stale:
        if row is None:
            continue
        outcome = await _apply(row, booking_id, None, links[row.id].event_id)
        (failures if outcome.startswith("retry") else done).append(f"{row.id}: {outcome}")
    for target, calendar_id in targets:
        assert booking is not None
        event = booking_event(booking, job_type, target.timezone)
        outcome = await _apply(target, booking_id, event, calendar_id=calendar_id)
        (failures if outcome.startswith("retry") else done).append(f"{target.id}: {outcome}")
    if failures:
        raise WriteBackFailed("; ".join(failures))
    return done


async def _targets(
    connection: asyncpg.Connection, tenant_id: UUID, resource_id: UUID
) -> list[tuple[ConnectionRow, str]]:
    """Where a confirmed booking on the resource is written: the resource's Google calendar, and the
    tenant's Jobber account when the resource is mapped to one of its users (assigned to that user)."""
    targets: list[tuple[ConnectionRow, str]] = []
    google = await store.for_resource(connection, tenant_id, resource_id, Provider.GOOGLE)
    if google is not None:
        targets.append((google, google.calendar_id))
    jobber = await store.jobber_of_tenant(connection, tenant_id)
    if jobber is not None:
        user = await store.jobber_user_for_resource(connection, jobber.id, resource_id)
        if user is not None:
            targets.append((jobber, user))
    return targets


async def _apply(
    row: ConnectionRow,
    booking_id: UUID,
    event: BookingEvent | None,
    recorded: str | None = None,
    *,
    calendar_id: str | None = None,
) -> str:
    """Write (`event`) or delete (None) the booking's event in one connection's calendar, and record it
    (Google: the event id derived from the booking's; Jobber: the request and assessment ids)."""
    event_id = recorded or event_id_for(booking_id)
    calendar_id = calendar_id or row.calendar_id
    if row.status != ConnectionStatus.ACTIVE:
        await _record(row, booking_id, event_id, FAILED, f"connection {row.status}")
        return f"failed: connection {row.status}"
    provider = provider_for(row.provider)
    tokens = Tokens(row)
    try:
        if event is None:
            await tokens.call(lambda t: provider.delete_booking(t, calendar_id, booking_id))
        else:
            event_id = await tokens.call(lambda t: provider.write_booking(t, calendar_id, event))
    except Exception as exc:
        error = masked(exc)
        await count(SYNC_ERRORS, row.provider)
        await _record(row, booking_id, event_id, FAILED, error)
        if isinstance(exc, AuthRevoked):
            await mark_needs_reauth(row, error)
            log.warning("calendars.write_back_needs_reauth", connection_id=str(row.id), booking_id=str(booking_id))
            return "failed: needs_reauth (replayed on reconnect)"
        log.warning("calendars.write_back_failed", connection_id=str(row.id), booking_id=str(booking_id), error=error,
                    exc_info=not isinstance(exc, ProviderError))  # fmt: skip
        if isinstance(exc, ProviderError) and not exc.retryable:
            return f"failed (not retried): {error}"
        return f"retry: {error}"
    state = WRITTEN if event is not None else DELETED
    await _record(row, booking_id, event_id, state, None)
    log.info("calendars.written_back", connection_id=str(row.id), booking_id=str(booking_id), state=state)
    return state


async def _record(row: ConnectionRow, booking_id: UUID, event_id: str, state: str, error: str | None) -> None:
    async with session_scope() as session:
        connection = await raw_connection(session)
        await store.record_link(connection, booking_id, row.id, row.tenant_id, event_id, state, error)
        if error is not None:
            await store.note_error(connection, row.id, f"write-back: {error}")

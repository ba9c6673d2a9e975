"""Booking by SMS, carried out: the `message.received` and `hold.expired` subscribers.

`dialog` decides; this module applies the decision in one transaction: the thread's dialog
row (locked), the hold or booking (scheduling's own functions, so the exclusion constraint decides
every race, exactly as for the REST API) and the reply, queued with the key `booking:<message id>`
like every other text. A redelivered event finds its reply and changes nothing; a crash before the
commit leaves nothing behind and the redelivery does the whole turn. When scheduling refuses (the
time was taken by someone else, the hold ran out) it has undone only its own write (a savepoint); this
subscriber, which owns the transaction, undoes the rest of the turn and starts again, offering fresh
times instead.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.booking_by_sms import dialog
from nmc.booking_by_sms.dialog import Action, DialogState
from nmc.conversations import DEFAULT_BOOKING_PROMPT, CallerAction, caller_text, queue_text, thread_facts
from nmc.db import json_column, raw_connection, session_scope
from nmc.events import E164_PATTERN, HoldExpired, MessageReceived
from nmc.identity import TenantService
from nmc.messaging import MessageKind
from nmc.problems import DomainError, NotFound
from nmc.scheduling import (
    SCHEDULING_REFUSALS,
    BookingCreate,
    BookingSource,
    HoldCreate,
    HoldExpiredError,
    bookable_job_type,
    create_booking,
    create_hold,
    release_hold,
    search_availability,
)
from nmc.settings import get_settings

log = structlog.get_logger(module="booking_by_sms")

OFFER_DAYS = 14
_PHONE = re.compile(E164_PATTERN)


class Offer(msgspec.Struct, frozen=True):
    resource_id: UUID
    start: datetime


@dataclass(frozen=True)
class Turn:
    """One caller text (or one expired hold) applied to a thread's dialog, with what it needs."""

    thread_id: UUID
    tenant_id: UUID
    caller: str
    tenant_number: str
    business_name: str
    zone: ZoneInfo
    job_type_id: UUID | None
    state: DialogState
    offers: list[Offer]
    hold_id: UUID | None
    hold_start: datetime | None
    reprompts: int
    last_message_at: datetime | None
    reply_key: str
    causation_id: str
    message_at: datetime | None = None  # the caller's text this turn applies


class DialogRow(msgspec.Struct, frozen=True):
    """A thread's dialog as stored (idle with no offers when it has no row)."""

    state: DialogState = DialogState.IDLE
    job_type_id: UUID | None = None
    offers: list[Offer] = []
    hold_id: UUID | None = None
    hold_start: datetime | None = None
    reprompts: int = 0
    last_message_at: datetime | None = None


_DIALOG = """
    SELECT state, job_type_id, offers, hold_id, hold_start, reprompts, last_message_at
    FROM conv_booking_dialogs WHERE thread_id = $1
"""


async def _dialog_row(connection: asyncpg.Connection, thread_id: UUID) -> DialogRow:
    row = await connection.fetchrow(_DIALOG, thread_id)
    if row is None:
        return DialogRow()
    return msgspec.convert({**row, "offers": json_column(row["offers"])}, DialogRow)


_ENSURE_DIALOG = """
    INSERT INTO conv_booking_dialogs (thread_id, tenant_id, state) VALUES ($1, $2, 'idle')
    ON CONFLICT (thread_id) DO NOTHING
"""
_LOCK_DIALOG = "SELECT thread_id FROM conv_booking_dialogs WHERE thread_id = $1 FOR UPDATE"
_LOCK_HELD_DIALOG = """
    SELECT thread_id FROM conv_booking_dialogs WHERE hold_id = $1 AND state = 'held' FOR UPDATE
"""
_SAVE = """
    UPDATE conv_booking_dialogs
    SET state = $2, job_type_id = $3, offers = $4::jsonb, hold_id = $5, hold_start = $6, booking_id = $7,
        reprompts = $8, last_message_at = greatest(last_message_at, $9), updated_at = now()
    WHERE thread_id = $1
"""


def reply_key(message_id: UUID) -> str:
    return f"booking:{message_id}"


# ---------------------------------------------------------------------------- subscribers
async def converse(event: MessageReceived) -> None:
    """The `message.received` subscriber: the caller's text, read by the booking dialog."""
    if event.action == CallerAction.OPTED_OUT:
        await _let_go_after_opt_out(event)
        return
    if event.action is not None:  # opt-in, HELP: keywords, answered elsewhere
        return
    if not _PHONE.match(event.caller):  # a short code or a SIP address texting in: nobody to book for
        return
    async with session_scope() as session:
        found = await _message_turn(session, event)
        if found is None:
            return
        turn, reading, action = found
        try:
            await _carry_out(session, turn, action, reading)
        except SCHEDULING_REFUSALS as refused:
            await session.rollback()  # the turn's own writes too: it starts again from the stored state
            again = await _locked_turn(session, event.thread_id, event.tenant_id, turn.reply_key, turn.causation_id)
            if again is None:
                return
            await _offer(session, replace(again, message_at=turn.message_at), lead=_refusal_lead(refused, again))
    log.info("booking_dialog.turn", action=action.value, caller=event.caller)


async def offer_after_expiry(event: HoldExpired) -> None:
    """The `hold.expired` subscriber: a caller whose hold ran out gets fresh times."""
    assert event.tenant_id is not None
    async with session_scope() as session:
        connection = await raw_connection(session)
        thread_id = await connection.fetchval(_LOCK_HELD_DIALOG, event.hold_id)
        if thread_id is None:  # booked, released, or not a hold placed by SMS
            return
        key = f"booking:expired:{event.hold_id}"
        turn = await _locked_turn(session, thread_id, event.tenant_id, key, str(event.event_id))
        if turn is None:
            return
        await _offer(session, replace(turn, hold_id=None), lead=dialog.expired_lead(_local(turn, turn.hold_start)))
    log.info("booking_dialog.hold_expired")


async def _let_go_after_opt_out(event: MessageReceived) -> None:
    """STOP while a time is held: the time goes back at once (nothing more is texted)."""
    async with session_scope() as session:
        turn = await _locked_turn(
            session, event.thread_id, event.tenant_id, reply_key(event.message_id), str(event.event_id), create=False
        )
        if turn is None or turn.hold_id is None:
            return
        await _release(session, turn)
        await _save(session, turn, DialogState.IDLE)
        log.info("booking_dialog.released_on_opt_out")


# ---------------------------------------------------------------------------- reading a turn
async def _message_turn(session: AsyncSession, event: MessageReceived) -> tuple[Turn, dialog.Reading, Action] | None:
    """The turn a caller's text starts, with the dialog row locked; None when it is not for the dialog.

    Most texts are not: that is decided before any lock or write. A text answered already (a
    redelivered event) or older than one applied already changes nothing.
    """
    connection = await raw_connection(session)
    key = reply_key(event.message_id)
    message = await caller_text(connection, event.message_id, key)
    thread = await thread_facts(connection, event.thread_id)
    if message is None or thread is None or message.answered:
        return None
    stored = await _dialog_row(connection, event.thread_id)
    reading = dialog.read(message.body, dialog.prompt_keyword(thread.booking_prompt or DEFAULT_BOOKING_PROMPT))
    if dialog.decide(stored.state, reading, offered=len(stored.offers), reprompts=stored.reprompts) is Action.IGNORE:
        return None
    turn = await _locked_turn(session, event.thread_id, event.tenant_id, key, str(event.event_id))
    if turn is None or (turn.last_message_at is not None and message.created_at < turn.last_message_at):
        return None
    turn = replace(turn, message_at=message.created_at)
    action = dialog.decide(turn.state, reading, offered=len(turn.offers), reprompts=turn.reprompts)
    return None if action is Action.IGNORE else (turn, reading, action)


async def _locked_turn(
    session: AsyncSession, thread_id: UUID, tenant_id: UUID, key: str, causation_id: str, *, create: bool = True
) -> Turn | None:
    """The thread's dialog row (created idle if none, when `create`) locked for this transaction, and its context."""
    connection = await raw_connection(session)
    if create:
        await connection.execute(_ENSURE_DIALOG, thread_id, tenant_id)
    if await connection.fetchval(_LOCK_DIALOG, thread_id) is None:
        return None
    thread = await thread_facts(connection, thread_id)
    if thread is None:
        return None
    stored = await _dialog_row(connection, thread_id)
    tenant = await TenantService(session=session).get(tenant_id)
    # The dialog's job type while it is active, else the tenant's choice, else its oldest active one.
    job_type_id = await bookable_job_type(session, tenant_id, [stored.job_type_id, thread.booking_job_type_id])
    return Turn(
        thread_id=thread.thread_id,
        tenant_id=thread.tenant_id,
        caller=thread.caller,
        tenant_number=thread.tenant_number,
        business_name=tenant.name,
        zone=ZoneInfo(tenant.timezone),
        job_type_id=job_type_id,
        state=stored.state,
        offers=stored.offers,
        hold_id=stored.hold_id,
        hold_start=stored.hold_start,
        reprompts=stored.reprompts,
        last_message_at=stored.last_message_at,
        reply_key=key,
        causation_id=causation_id,
    )


# ---------------------------------------------------------------------------- carrying it out
async def _carry_out(session: AsyncSession, turn: Turn, action: Action, reading: dialog.Reading) -> None:
    if action is Action.OFFER:
        await _offer(session, turn)
    elif action is Action.OFFER_LATER:
        await _offer(session, turn, after=turn.offers[-1].start if turn.offers else None)
    elif action is Action.HOLD:
        assert reading.choice is not None
        await _hold(session, turn, turn.offers[reading.choice - 1])
    elif action is Action.CONFIRM:
        await _confirm(session, turn)
    elif action is Action.RELEASE:
        await _release(session, turn)
        await _save(session, turn, DialogState.IDLE)
        await _say(session, turn, dialog.released_text())
    elif action is Action.DECLINE:
        await _save(session, turn, DialogState.IDLE)
        await _say(session, turn, dialog.declined_text())
    elif action is Action.REPROMPT:
        await _save(session, turn, turn.state, offers=turn.offers, reprompts=turn.reprompts + 1, keep_hold=True)
        await _say(session, turn, dialog.reprompt_text(turn.state, _local(turn, turn.hold_start), len(turn.offers)))


async def _offer(session: AsyncSession, turn: Turn, *, after: datetime | None = None, lead: str = "") -> None:
    """Text the next open times (after `after`), letting a held time go first; none found → idle."""
    if turn.hold_id is not None:
        await _release(session, turn)
    if turn.job_type_id is None:
        await _save(session, turn, DialogState.IDLE)
        await _say(session, turn, lead + dialog.not_set_up_text(turn.business_name))
        return
    offers = await _open_times(session, turn, after)
    if not offers:
        await _save(session, turn, DialogState.IDLE)
        await _say(session, turn, dialog.no_times_text(turn.business_name, lead=lead))
        return
    await _save(session, turn, DialogState.OFFERED, offers=offers)
    starts = [offer.start.astimezone(turn.zone) for offer in offers]
    await _say(session, turn, dialog.offers_text(turn.business_name, starts, lead=lead))


async def _open_times(session: AsyncSession, turn: Turn, after: datetime | None) -> list[Offer]:
    """The next `OFFER_COUNT` open starts over all resources, each at least one job's length apart."""
    assert turn.job_type_id is not None
    now = datetime.now(UTC)
    start = max(now, after + timedelta(minutes=1)) if after else now
    found = await search_availability(
        session, turn.tenant_id, job_type_id=turn.job_type_id, start=start, end=start + timedelta(days=OFFER_DAYS)
    )
    spacing = timedelta(minutes=found.duration_minutes)
    candidates = sorted((slot.start, resource.resource_id) for resource in found.resources for slot in resource.slots)
    picked: list[Offer] = []
    for slot_start, resource_id in candidates:
        if after is not None and slot_start < after + spacing:
            continue
        if picked and slot_start < picked[-1].start + spacing:
            continue
        picked.append(Offer(resource_id=resource_id, start=slot_start.astimezone(UTC)))
        if len(picked) == dialog.OFFER_COUNT:
            break
    return picked


async def _hold(session: AsyncSession, turn: Turn, offer: Offer) -> None:
    """Hold the chosen time for the caller (the time held before, if any, goes back first)."""
    assert turn.job_type_id is not None
    if turn.hold_id is not None:
        await _release(session, turn)
    hold = await create_hold(
        session,
        turn.tenant_id,
        HoldCreate(
            resource_id=offer.resource_id, job_type_id=turn.job_type_id, start=offer.start, customer_phone=turn.caller
        ),
    )
    await _save(session, turn, DialogState.HELD, offers=turn.offers, hold_id=hold.id, hold_start=hold.start)
    text = dialog.held_text(hold.start.astimezone(turn.zone), get_settings().HOLD_TTL_MINUTES)
    await _say(session, turn, text)


async def _confirm(session: AsyncSession, turn: Turn) -> None:
    assert turn.hold_id is not None
    assert turn.hold_start is not None
    booking = await create_booking(
        session,
        turn.tenant_id,
        BookingCreate(hold_id=turn.hold_id, customer_phone=turn.caller),
        source=BookingSource.SMS,
    )
    await _save(session, turn, DialogState.BOOKED, booking_id=booking.id)
    await _say(session, turn, dialog.booked_text(turn.business_name, booking.start.astimezone(turn.zone)))


async def _release(session: AsyncSession, turn: Turn) -> None:
    """Give the held time back; a hold that is gone already (expired and collected) is fine."""
    assert turn.hold_id is not None
    with contextlib.suppress(NotFound):
        await release_hold(session, turn.tenant_id, turn.hold_id)


def _refusal_lead(refused: DomainError, turn: Turn) -> str:
    if isinstance(refused, HoldExpiredError | NotFound):
        return dialog.expired_lead(_local(turn, turn.hold_start))
    return dialog.TAKEN_LEAD


def _local(turn: Turn, at: datetime | None) -> datetime | None:
    return at.astimezone(turn.zone) if at is not None else None


async def _save(
    session: AsyncSession,
    turn: Turn,
    state: DialogState,
    *,
    offers: list[Offer] | None = None,
    hold_id: UUID | None = None,
    hold_start: datetime | None = None,
    booking_id: UUID | None = None,
    reprompts: int = 0,
    keep_hold: bool = False,
) -> None:
    if keep_hold:
        hold_id, hold_start = turn.hold_id, turn.hold_start
    await (await raw_connection(session)).execute(
        _SAVE,
        turn.thread_id,
        state,
        turn.job_type_id,
        msgspec.json.encode(offers or []).decode(),
        hold_id,
        hold_start,
        booking_id,
        reprompts,
        turn.message_at,
    )


async def _say(session: AsyncSession, turn: Turn, body: str) -> None:
    await queue_text(
        await raw_connection(session),
        tenant_id=turn.tenant_id,
        thread_id=turn.thread_id,
        kind=MessageKind.BOOKING,
        key=turn.reply_key,
        to=turn.caller,
        from_=turn.tenant_number,
        body=body,
        causation_id=turn.causation_id,
    )

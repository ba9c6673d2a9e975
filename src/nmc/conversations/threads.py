"""A caller's current thread with a tenant: where their next message (or our next text) lands."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4

import asyncpg
import msgspec
import structlog

from nmc.conversations.models import PREVIEW_LENGTH, ThreadStatus
from nmc.db import hot_transaction
from nmc.events import BookingConfirmed

log = structlog.get_logger(module="conversations")

# The current thread (`open` or `opted_out`, unique per tenant and caller), created if there is none.
_CURRENT_THREAD = """
    WITH created AS (
        INSERT INTO conv_threads (id, tenant_id, caller, tenant_number, status)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (tenant_id, caller) WHERE status IN ('open', 'opted_out') DO NOTHING
        RETURNING id
    )
    SELECT id FROM created
    UNION ALL
    SELECT id FROM conv_threads WHERE tenant_id = $2 AND caller = $3 AND status IN ('open', 'opted_out')
    LIMIT 1
"""


def current_thread_cte(
    name: str, *, thread_id: str, tenant_id: str, caller: str, tenant_number: str, status: str, unless: str
) -> str:
    """`_CURRENT_THREAD` as CTEs (`{name}_created`, `{name}`) for a statement on the first-SMS path to
    prepend (the arguments are its placeholders or SQL expressions); nothing is created when `unless`
    holds. `{name}` may be empty under a concurrent creation: then call `current_thread`."""
    return f"""{name}_created AS (
        INSERT INTO conv_threads (id, tenant_id, caller, tenant_number, status)
        SELECT {thread_id}, {tenant_id}, {caller}, {tenant_number}, {status} WHERE NOT ({unless})
        ON CONFLICT (tenant_id, caller) WHERE status IN ('open', 'opted_out') DO NOTHING
        RETURNING id
    ), {name} AS (
        SELECT id FROM {name}_created
        UNION ALL
        SELECT id FROM conv_threads
        WHERE tenant_id = {tenant_id} AND caller = {caller} AND status IN ('open', 'opted_out') AND NOT ({unless})
        LIMIT 1
    )"""


# A concurrent transaction may create the thread between our INSERT's conflict check and its commit:
# the statement then sees neither row (one snapshot), and the next statement (a new snapshot) does.
_ATTEMPTS = 3


async def current_thread(
    connection: asyncpg.Connection, tenant_id: UUID, caller: str, tenant_number: str, *, opted_out: bool
) -> UUID:
    """The caller's current thread, created `open` (or `opted_out` for an opted-out caller) if none."""
    status = ThreadStatus.OPTED_OUT if opted_out else ThreadStatus.OPEN
    for _ in range(_ATTEMPTS):
        thread_id: UUID | None = await connection.fetchval(
            _CURRENT_THREAD, uuid4(), tenant_id, caller, tenant_number, status
        )
        if thread_id is not None:
            return thread_id
    raise RuntimeError("the caller's current thread kept changing under concurrent writes")


class ThreadFacts(msgspec.Struct, frozen=True):
    """A thread and its tenant's booking settings, as the booking dialog reads them."""

    thread_id: UUID
    tenant_id: UUID
    caller: str
    tenant_number: str
    booking_prompt: str | None
    booking_job_type_id: UUID | None


_THREAD_FACTS = """
    SELECT th.id AS thread_id, th.tenant_id, th.caller, th.tenant_number, s.booking_prompt, s.booking_job_type_id
    FROM conv_threads th LEFT JOIN conv_settings s ON s.tenant_id = th.tenant_id
    WHERE th.id = $1
"""


async def thread_facts(connection: asyncpg.Connection, thread_id: UUID) -> ThreadFacts | None:
    row = await connection.fetchrow(_THREAD_FACTS, thread_id)
    return msgspec.convert(dict(row), ThreadFacts) if row else None


class CallerText(msgspec.Struct, frozen=True):
    """A caller's text, and whether the reply keyed `reply_key` was queued already."""

    body: str
    created_at: datetime
    answered: bool


_CALLER_TEXT = """
    SELECT body, created_at, EXISTS (SELECT 1 FROM conv_messages WHERE idempotency_key = $2) AS answered
    FROM conv_messages WHERE id = $1
"""


async def caller_text(connection: asyncpg.Connection, message_id: UUID, reply_key: str) -> CallerText | None:
    row = await connection.fetchrow(_CALLER_TEXT, message_id, reply_key)
    return msgspec.convert(dict(row), CallerText) if row else None


def preview(body: str, num_media: int = 0) -> str:
    """What the inbox list shows of a message."""
    text = " ".join(body.split())
    if not text and num_media:
        text = "(photo)" if num_media == 1 else f"({num_media} attachments)"
    return text if len(text) <= PREVIEW_LENGTH else text[: PREVIEW_LENGTH - 1] + "…"


# The caller's open thread ends in a booking: no follow-up; their next text opens a new thread.
_BOOKED = """
    UPDATE conv_threads SET status = 'booked', follow_up_due_at = NULL, last_activity_at = now()
    WHERE tenant_id = $1 AND caller = $2 AND status = 'open'
    RETURNING id
"""


async def mark_booked(event: BookingConfirmed) -> None:
    """The `booking.confirmed` subscriber (idempotent: only an open thread moves)."""
    if event.customer_phone is None:
        return
    async with hot_transaction() as connection:
        if await connection.fetchval(_BOOKED, event.tenant_id, event.customer_phone):
            log.info("thread.booked", caller=event.customer_phone)

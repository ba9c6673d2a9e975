"""Conversations: the inbox (threads, replies), messaging settings, KPIs, delivery status.

The first SMS is in `first_sms.py`, inbound texts in `inbound.py`, sending in `outbound.py`. Every
query here is scoped by the caller's tenant; a thread of another tenant is "not found".
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, time
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import msgspec
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.conversations.delivery import STATUS_RANK, status_rank_sql
from nmc.conversations.models import CURRENT_STATUSES, Message, ThreadStatus
from nmc.conversations.optouts import OPTED_OUT_SQL
from nmc.conversations.outbound import queue_text
from nmc.conversations.schemas import (
    MediaRead,
    MessageRead,
    MessagingSettingsRead,
    MessagingSettingsWrite,
    TemplateDefaults,
    ThreadDetail,
    ThreadPage,
    ThreadRead,
)
from nmc.conversations.templates import (
    BOOKING_PROMPT_FIELDS,
    DEFAULT_BOOKING_PROMPT,
    DEFAULT_FIRST_SMS_AFTER_HOURS,
    DEFAULT_FIRST_SMS_BUSINESS_HOURS,
    DEFAULT_FOLLOW_UP,
    DEFAULT_HELP,
    MERGE_FIELDS,
    UnknownMergeField,
    check_template,
)
from nmc.conversations.threads import preview
from nmc.db import Transactional, json_column, raw_connection
from nmc.messaging import LANDLINE_SQL, UNREACHABLE_LANDLINE, LineType, MessageKind, mark_line_type
from nmc.problems import Conflict, InvalidField, NotFound
from nmc.scheduling import JobTypeService

log = structlog.get_logger(module="conversations")

# A status callback, applied to the message with that SID (never backwards), or kept until the SID is
# recorded when no message has it yet (`delivery.py`). A status kept earlier for the SID counts too:
# the furthest of the two is applied.
_APPLY_STATUS = f"""
    WITH target AS (SELECT id, to_number FROM conv_messages WHERE twilio_sid = $1),
    cleared AS (
        DELETE FROM conv_early_statuses WHERE message_sid = $1 AND EXISTS (SELECT 1 FROM target)
        RETURNING status, error_code
    ),
    candidate AS (
        SELECT c.status, c.error_code FROM (
            SELECT $2::text AS status, $3::int AS error_code UNION ALL SELECT status, error_code FROM cleared
        ) c
        ORDER BY {status_rank_sql("c.status")} DESC LIMIT 1
    ),
    updated AS (
        UPDATE conv_messages m SET status = c.status, error_code = c.error_code
        FROM target t, candidate c
        WHERE m.id = t.id AND {status_rank_sql("m.status")} < {status_rank_sql("c.status")}
        RETURNING m.id
    ),
    kept AS (
        INSERT INTO conv_early_statuses AS e (message_sid, status, error_code, received_at)
        SELECT $1, $2, $3, now() WHERE NOT EXISTS (SELECT 1 FROM target)
        ON CONFLICT (message_sid) DO UPDATE SET status = EXCLUDED.status, error_code = EXCLUDED.error_code,
                                                received_at = now()
        WHERE {status_rank_sql("e.status")} < {status_rank_sql("EXCLUDED.status")}
        RETURNING 1
    )
    SELECT (SELECT to_number FROM target) AS to_number,
           $3 = {UNREACHABLE_LANDLINE} OR EXISTS (SELECT 1 FROM cleared WHERE error_code = {UNREACHABLE_LANDLINE})
               AS landline,
           EXISTS (SELECT 1 FROM updated) AS updated,
           EXISTS (SELECT 1 FROM kept) AS kept
"""
_RECIPIENT = "SELECT to_number FROM conv_messages WHERE twilio_sid = $1"


async def update_delivery_status(session: Transactional, message_sid: str, status: str, error_code: int | None) -> bool:
    """Apply a Twilio status callback; a late or repeated callback never moves a message backwards.

    A callback for a SID no message has yet is kept (`conv_early_statuses`) and applied by the statement
    that records the SID. 30006 (landline or unreachable carrier) marks the recipient's number so it is
    not texted again. True when a message's status moved.
    """
    connection = await raw_connection(session)
    if status not in STATUS_RANK:  # a status we do not track; its 30006 still marks the number
        recipient = await connection.fetchval(_RECIPIENT, message_sid) if error_code == UNREACHABLE_LANDLINE else None
        if recipient is not None:
            await mark_line_type(connection, recipient, LineType.LANDLINE, "twilio_30006")
        return False
    row = await connection.fetchrow(_APPLY_STATUS, message_sid, status, error_code)
    if row["kept"]:
        # The SID may have been recorded while this statement ran (its snapshot predates that commit):
        # once more on a fresh snapshot. Idempotent: a status kept already is not kept again.
        row = await connection.fetchrow(_APPLY_STATUS, message_sid, status, error_code)
    if row["landline"] and row["to_number"] is not None:
        await mark_line_type(connection, row["to_number"], LineType.LANDLINE, "twilio_30006")
    return bool(row["updated"])


class FirstSmsOutcome(msgspec.Struct, frozen=True):
    status: str
    latency_ms: float | None


async def first_sms_outcome(session: AsyncSession, call_id: UUID) -> FirstSmsOutcome | None:
    """Where the first SMS of a missed call stands (`nmc simulate`, the smoke test)."""
    row = (
        await session.execute(
            select(Message.status, Message.latency_ms).where(
                Message.call_id == call_id, Message.kind == MessageKind.FIRST_SMS
            )
        )
    ).first()
    return FirstSmsOutcome(row.status, row.latency_ms) if row else None


# ---------------------------------------------------------------- cursors
def encode_cursor(at: datetime, row_id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, field: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, row_id = raw.partition("|")
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None:
            raise ValueError("naive timestamp")
        return moment, UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidField(field, "not a cursor this API returned") from None


# ---------------------------------------------------------------- reading rows
_THREAD_COLUMNS = (
    "id, caller, tenant_number, status, unread_count, last_activity_at, last_message_preview, "
    "follow_up_due_at, created_at"
)
_MESSAGE_COLUMNS = "id, direction, kind, body, media, status, suppressed_reason, error_code, created_at, sent_at"


def thread_read(row: asyncpg.Record) -> ThreadRead:
    return ThreadRead(
        id=row["id"],
        caller=row["caller"],
        tenant_number=row["tenant_number"],
        status=row["status"],
        unread_count=row["unread_count"],
        last_activity_at=row["last_activity_at"],
        last_message_preview=row["last_message_preview"],
        follow_up_due_at=row["follow_up_due_at"],
        created_at=row["created_at"],
    )


def _media(value: Any) -> list[MediaRead]:
    items = json_column(value) or []
    return [MediaRead(url=item["url"], content_type=item.get("content_type")) for item in items]


def message_read(row: asyncpg.Record) -> MessageRead:
    return MessageRead(
        id=row["id"],
        direction=row["direction"],
        kind=row["kind"],
        body=row["body"],
        media=_media(row["media"]),
        status=row["status"],
        suppressed_reason=row["suppressed_reason"],
        error_code=row["error_code"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
    )


# ---------------------------------------------------------------- the inbox
_THREAD = f"SELECT {_THREAD_COLUMNS} FROM conv_threads WHERE id = $1 AND tenant_id = $2"
# Owner alerts go to the owner about the thread; they are not part of the conversation shown.
_MESSAGES = f"""
    SELECT * FROM (
        SELECT {_MESSAGE_COLUMNS} FROM conv_messages
        WHERE thread_id = $1 AND kind <> 'owner_alert' AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
        ORDER BY created_at DESC, id DESC
        LIMIT $4
    ) latest ORDER BY created_at, id
"""
_REPLY_TARGET = f"""
    SELECT t.id, t.caller, t.tenant_number,
           {OPTED_OUT_SQL.format(tenant="t.tenant_id", phone="t.caller")} AS opted_out,
           {LANDLINE_SQL.format(phone="t.caller")} AS landline
    FROM conv_threads t WHERE t.id = $1 AND t.tenant_id = $2
    FOR UPDATE OF t
"""
_MESSAGE_BY_KEY = f"SELECT {_MESSAGE_COLUMNS} FROM conv_messages WHERE idempotency_key = $1 AND tenant_id = $2"
_MESSAGE_BY_ID = f"SELECT {_MESSAGE_COLUMNS} FROM conv_messages WHERE id = $1"
# The owner answered: the thread is read, active now, and needs no automatic follow-up.
_TOUCH_REPLIED = """
    UPDATE conv_threads SET last_activity_at = now(), last_message_preview = $2, unread_count = 0,
                            follow_up_due_at = NULL
    WHERE id = $1
"""
_MARK_READ = f"UPDATE conv_threads SET unread_count = 0 WHERE id = $1 AND tenant_id = $2 RETURNING {_THREAD_COLUMNS}"
_CLOSE = f"""
    UPDATE conv_threads SET status = '{ThreadStatus.CLOSED}', follow_up_due_at = NULL
    WHERE id = $1 AND tenant_id = $2 RETURNING {_THREAD_COLUMNS}
"""
_REOPEN_TARGET = f"""
    SELECT t.status, t.caller,
           {OPTED_OUT_SQL.format(tenant="t.tenant_id", phone="t.caller")} AS opted_out,
           EXISTS (SELECT 1 FROM conv_threads c WHERE c.tenant_id = t.tenant_id AND c.caller = t.caller
                     AND c.status IN ('open', 'opted_out') AND c.id <> t.id) AS other_current
    FROM conv_threads t WHERE t.id = $1 AND t.tenant_id = $2
    FOR UPDATE OF t
"""
_SET_THREAD_STATUS = f"UPDATE conv_threads SET status = $3 WHERE id = $1 AND tenant_id = $2 RETURNING {_THREAD_COLUMNS}"


class InboxService:
    """The tenant's threads, plain SQL on the request session's connection (the list is benchmarked)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _connection(self) -> asyncpg.Connection:
        return await raw_connection(self.session)

    async def list_threads(
        self,
        tenant_id: UUID,
        *,
        status: str | None = None,
        unread: bool | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ThreadPage:
        """Newest activity first, keyset-paginated on (last_activity_at, id)."""
        conditions = ["tenant_id = $1"]
        args: list[Any] = [tenant_id]
        if status is not None:
            args.append(status.replace("-", "_"))
            conditions.append(f"status = ${len(args)}")
        if unread is not None:
            conditions.append("unread_count > 0" if unread else "unread_count = 0")
        if cursor is not None:
            args += decode_cursor(cursor, "cursor")
            conditions.append(f"(last_activity_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        rows = await (await self._connection()).fetch(
            f"SELECT {_THREAD_COLUMNS} FROM conv_threads WHERE {' AND '.join(conditions)} "
            f"ORDER BY last_activity_at DESC, id DESC LIMIT ${len(args)}",
            *args,
        )
        items = [thread_read(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1].last_activity_at, items[-1].id) if len(rows) > limit else None
        return ThreadPage(items=items, next_cursor=next_cursor)

    async def get_thread(
        self, tenant_id: UUID, thread_id: UUID, *, limit: int = 100, before: str | None = None
    ) -> ThreadDetail:
        connection = await self._connection()
        thread = await connection.fetchrow(_THREAD, thread_id, tenant_id)
        if thread is None:
            raise NotFound("thread")
        at, message_id = decode_cursor(before, "before") if before else (None, None)
        rows = await connection.fetch(_MESSAGES, thread_id, at, message_id, limit + 1)
        earlier = len(rows) > limit  # oldest first: the extra row is the first one
        messages = [message_read(row) for row in (rows[1:] if earlier else rows)]
        return ThreadDetail(
            **msgspec.structs.asdict(thread_read(thread)),
            messages=messages,
            earlier_messages_cursor=encode_cursor(messages[0].created_at, messages[0].id) if earlier else None,
        )

    async def reply(self, tenant_id: UUID, thread_id: UUID, body: str, idempotency_key: str | None) -> MessageRead:
        """Queue the owner's text through the outbox (sent by the worker with the usual guards).

        With an `Idempotency-Key`, a retried request returns the text it queued the first time.
        """
        connection = await self._connection()
        target = await connection.fetchrow(_REPLY_TARGET, thread_id, tenant_id)
        if target is None:
            raise NotFound("thread")
        key = f"reply:{tenant_id}:{idempotency_key}" if idempotency_key else f"reply:{uuid4()}"
        if idempotency_key and (earlier := await connection.fetchrow(_MESSAGE_BY_KEY, key, tenant_id)):
            return message_read(earlier)
        if not body.strip():
            raise InvalidField("body", "the text is empty")
        if target["opted_out"]:
            raise Conflict("The caller opted out of texts from this business (they can text START)")
        if target["landline"]:
            raise Conflict("The caller's number is a landline: it cannot receive texts")
        message_id = await queue_text(
            connection,
            tenant_id=tenant_id,
            thread_id=thread_id,
            kind=MessageKind.REPLY,
            key=key,
            to=target["caller"],
            from_=target["tenant_number"],
            body=body,
        )
        if message_id is None:  # the same Idempotency-Key, concurrently
            return message_read(await connection.fetchrow(_MESSAGE_BY_KEY, key, tenant_id))
        await connection.execute(_TOUCH_REPLIED, thread_id, preview(body))
        log.info("inbox.reply_queued", to=target["caller"])
        return message_read(await connection.fetchrow(_MESSAGE_BY_ID, message_id))

    async def mark_read(self, tenant_id: UUID, thread_id: UUID) -> ThreadRead:
        return await self._thread_update(_MARK_READ, thread_id, tenant_id)

    async def close(self, tenant_id: UUID, thread_id: UUID) -> ThreadRead:
        return await self._thread_update(_CLOSE, thread_id, tenant_id)

    async def reopen(self, tenant_id: UUID, thread_id: UUID) -> ThreadRead:
        """A booked or closed thread becomes the caller's current one again (`opted_out` if they are)."""
        connection = await self._connection()
        target = await connection.fetchrow(_REOPEN_TARGET, thread_id, tenant_id)
        if target is None:
            raise NotFound("thread")
        if target["status"] in CURRENT_STATUSES:
            return await self._thread_update(_THREAD, thread_id, tenant_id)
        if target["other_current"]:
            raise Conflict("The caller has a newer open thread: continue there")
        status = ThreadStatus.OPTED_OUT if target["opted_out"] else ThreadStatus.OPEN
        try:
            return await self._thread_update(_SET_THREAD_STATUS, thread_id, tenant_id, status)
        except asyncpg.UniqueViolationError:
            raise Conflict("The caller has a newer open thread: continue there") from None

    async def _thread_update(self, sql: str, *args: Any) -> ThreadRead:
        row = await (await self._connection()).fetchrow(sql, *args)
        if row is None:
            raise NotFound("thread")
        return thread_read(row)

    # ------------------------------------------------------------ settings
    async def messaging_settings(self, tenant_id: UUID) -> MessagingSettingsRead:
        row = await (await self._connection()).fetchrow("SELECT * FROM conv_settings WHERE tenant_id = $1", tenant_id)
        if row is None:
            return MessagingSettingsRead(defaults=template_defaults())
        return MessagingSettingsRead(
            first_sms_business_hours=row["first_sms_business_hours"],
            first_sms_after_hours=row["first_sms_after_hours"],
            booking_prompt=row["booking_prompt"],
            follow_up_template=row["follow_up_template"],
            follow_up_delay_minutes=row["follow_up_delay_minutes"],
            help_text=row["help_text"],
            booking_job_type_id=row["booking_job_type_id"],
            owner_alerts_enabled=row["owner_alerts_enabled"],
            owner_alert_number=row["owner_alert_number"],
            quiet_hours_start=_hhmm(row["quiet_hours_start"]),
            quiet_hours_end=_hhmm(row["quiet_hours_end"]),
            quiet_hours_policy=row["quiet_hours_policy"],
            cooldown_minutes=row["cooldown_minutes"],
            defaults=template_defaults(),
            updated_at=row["updated_at"],
        )

    async def update_messaging_settings(self, tenant_id: UUID, data: MessagingSettingsWrite) -> MessagingSettingsRead:
        check_messaging_settings(data)
        if data.booking_job_type_id is not None:
            await self._check_bookable(tenant_id, data.booking_job_type_id)
        await (await self._connection()).execute(
            _UPSERT_SETTINGS,
            tenant_id,
            data.first_sms_business_hours,
            data.first_sms_after_hours,
            data.booking_prompt,
            data.follow_up_template,
            data.follow_up_delay_minutes,
            data.help_text,
            data.owner_alerts_enabled,
            data.owner_alert_number,
            _time(data.quiet_hours_start),
            _time(data.quiet_hours_end),
            data.quiet_hours_policy,
            data.cooldown_minutes,
            data.booking_job_type_id,
        )
        return await self.messaging_settings(tenant_id)

    async def _check_bookable(self, tenant_id: UUID, job_type_id: UUID) -> None:
        try:
            job_type = await JobTypeService(session=self.session).get_for(tenant_id, job_type_id)
        except NotFound:
            raise InvalidField("booking_job_type_id", "no such job type") from None
        if not job_type.active:
            raise InvalidField("booking_job_type_id", "the job type is not active")


_UPSERT_SETTINGS = """
    INSERT INTO conv_settings (tenant_id, first_sms_business_hours, first_sms_after_hours, booking_prompt,
                               follow_up_template, follow_up_delay_minutes, help_text, owner_alerts_enabled,
                               owner_alert_number, quiet_hours_start, quiet_hours_end, quiet_hours_policy,
                               cooldown_minutes, booking_job_type_id, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now())
    ON CONFLICT (tenant_id) DO UPDATE SET
        first_sms_business_hours = EXCLUDED.first_sms_business_hours,
        first_sms_after_hours = EXCLUDED.first_sms_after_hours,
        booking_prompt = EXCLUDED.booking_prompt,
        follow_up_template = EXCLUDED.follow_up_template,
        follow_up_delay_minutes = EXCLUDED.follow_up_delay_minutes,
        help_text = EXCLUDED.help_text,
        owner_alerts_enabled = EXCLUDED.owner_alerts_enabled,
        owner_alert_number = EXCLUDED.owner_alert_number,
        quiet_hours_start = EXCLUDED.quiet_hours_start,
        quiet_hours_end = EXCLUDED.quiet_hours_end,
        quiet_hours_policy = EXCLUDED.quiet_hours_policy,
        cooldown_minutes = EXCLUDED.cooldown_minutes,
        booking_job_type_id = EXCLUDED.booking_job_type_id,
        updated_at = now()
"""
# Texts that open a conversation must say how to stop it (CTIA); we check the tenant's wording.
_MUST_OFFER_STOP = ("first_sms_business_hours", "first_sms_after_hours")


def check_messaging_settings(data: MessagingSettingsWrite) -> None:
    """Raise `InvalidField` naming the first field we cannot use (an unknown merge field names itself)."""
    templates = {
        "first_sms_business_hours": (data.first_sms_business_hours, MERGE_FIELDS),
        "first_sms_after_hours": (data.first_sms_after_hours, MERGE_FIELDS),
        "booking_prompt": (data.booking_prompt, BOOKING_PROMPT_FIELDS),
        "follow_up_template": (data.follow_up_template, MERGE_FIELDS),
        "help_text": (data.help_text, MERGE_FIELDS),
    }
    for field, (template, allowed) in templates.items():
        if template is None:
            continue
        try:
            check_template(template, allowed)
        except UnknownMergeField as exc:
            raise InvalidField(field, str(exc)) from None
        if field in _MUST_OFFER_STOP and "STOP" not in template.upper():
            raise InvalidField(field, "a first text must tell the caller how to opt out, e.g. 'Reply STOP to opt out.'")
    if (data.quiet_hours_start is None) != (data.quiet_hours_end is None):
        raise InvalidField("quiet_hours_end", "set both quiet_hours_start and quiet_hours_end, or neither")


def template_defaults() -> TemplateDefaults:
    return TemplateDefaults(
        first_sms_business_hours=DEFAULT_FIRST_SMS_BUSINESS_HOURS,
        first_sms_after_hours=DEFAULT_FIRST_SMS_AFTER_HOURS,
        booking_prompt=DEFAULT_BOOKING_PROMPT,
        follow_up_template=DEFAULT_FOLLOW_UP,
        help_text=DEFAULT_HELP,
        merge_fields=sorted(MERGE_FIELDS),
    )


def _hhmm(value: time | None) -> str | None:
    return value.strftime("%H:%M") if value is not None else None


def _time(value: str | None) -> time | None:
    return time.fromisoformat(value) if value is not None else None

"""The one follow-up text of a thread whose caller never answered.

When a first SMS is accepted and the tenant has follow-ups on (`follow_up_delay_minutes`), the
thread's `follow_up_due_at` is set (in the statement that already touches the thread). An inbound
message, an opt-out, an owner reply, a booking or closing the thread clears it. The worker sweeps
due threads every few seconds (`queue_due_follow_ups`, `FOR UPDATE SKIP LOCKED`, safe with several
workers), re-checks them, and queues the text under the unique key `follow_up:<thread id>` through
the outbox; sending applies the usual guards again (opt-out, quiet hours, pause).

A column and a sweep rather than one deferred outbox event per first SMS: the state is visible (and
cancellable) on the thread, and a deferred row would count as outbox lag for hours.
"""

from __future__ import annotations

import structlog

from nmc.conversations.optouts import OPTED_OUT_SQL
from nmc.conversations.outbound import queue_text
from nmc.conversations.templates import DEFAULT_FOLLOW_UP, MergeValues, render_or_default
from nmc.db import hot_transaction
from nmc.messaging import MessageKind

log = structlog.get_logger(module="conversations")

SWEEP_LIMIT = 100

_DUE = f"""
    SELECT th.id, th.tenant_id, th.caller, th.tenant_number, th.status,
           t.name AS business_name, t.status AS tenant_status,
           s.follow_up_template, s.follow_up_delay_minutes, s.booking_prompt,
           {OPTED_OUT_SQL.format(tenant="th.tenant_id", phone="th.caller")}
               AS opted_out,
           -- the caller (or the owner) wrote after our last first SMS
           EXISTS (SELECT 1 FROM conv_messages r
                   WHERE r.thread_id = th.id AND r.kind IN ('inbound', 'reply')
                     AND r.created_at > (SELECT max(f.sent_at) FROM conv_messages f
                                         WHERE f.thread_id = th.id AND f.kind = 'first_sms')) AS answered
    FROM conv_threads th
    JOIN tenant_profiles t ON t.id = th.tenant_id
    LEFT JOIN conv_settings s ON s.tenant_id = th.tenant_id
    WHERE th.follow_up_due_at <= now()
    ORDER BY th.follow_up_due_at
    LIMIT {SWEEP_LIMIT}
    FOR UPDATE OF th SKIP LOCKED
"""
_CLEAR = "UPDATE conv_threads SET follow_up_due_at = NULL WHERE id = ANY($1::uuid[])"


async def queue_due_follow_ups() -> int:
    """Queue the follow-ups that are due and still wanted; returns how many were queued."""
    queued = 0
    while True:
        async with hot_transaction() as connection:
            due = await connection.fetch(_DUE)
            for thread in due:
                if (
                    thread["status"] != "open"
                    or thread["tenant_status"] != "active"
                    or thread["opted_out"]
                    or thread["answered"]
                    or thread["follow_up_delay_minutes"] is None  # turned off since it was scheduled
                ):
                    continue
                values = MergeValues(
                    business_name=thread["business_name"],
                    caller_number=thread["caller"],
                    booking_prompt=thread["booking_prompt"],
                )
                message_id = await queue_text(
                    connection,
                    tenant_id=thread["tenant_id"],
                    thread_id=thread["id"],
                    kind=MessageKind.FOLLOW_UP,
                    key=f"follow_up:{thread['id']}",
                    to=thread["caller"],
                    from_=thread["tenant_number"],
                    body=render_or_default(thread["follow_up_template"], DEFAULT_FOLLOW_UP, values),
                )
                queued += message_id is not None
            await connection.execute(_CLEAR, [thread["id"] for thread in due])
        if len(due) < SWEEP_LIMIT:
            break
    if queued:
        log.info("follow_up.queued", count=queued)
    return queued

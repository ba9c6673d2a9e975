"""Helpers shared by the conversation tests (no tests here): signed inbound texts, the dispatcher
run to quiescence, and a caller who got a first SMS."""

from __future__ import annotations

import secrets
from typing import Any
from uuid import UUID

import asyncpg
from litestar.testing import AsyncTestClient

from nmc.events.dispatcher import dispatch
from tests.integration.twilio_webhooks import missed_call, post_twilio

CALLER = "+15557654321"
INBOUND_PATH = "/webhooks/twilio/sms"


def new_message_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def inbound_params(
    to: str,
    body: str,
    caller: str = CALLER,
    *,
    sid: str | None = None,
    media: list[tuple[str, str]] | None = None,
    opt_out_type: str | None = None,
) -> dict[str, str]:
    """The form Twilio posts for an inbound SMS/MMS (plus the fields we do not read)."""
    params = {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": caller,
        "FromCountry": "US",
        "MessageSid": sid or new_message_sid("MM" if media else "SM"),
        "MessagingServiceSid": "MG" + "1" * 32,
        "NumMedia": str(len(media or [])),
        "NumSegments": "1",
        "SmsStatus": "received",
        "To": to,
    }
    for i, (url, content_type) in enumerate(media or []):
        params[f"MediaUrl{i}"] = url
        params[f"MediaContentType{i}"] = content_type
    if opt_out_type:
        params["OptOutType"] = opt_out_type
    return params


async def text_in(client: AsyncTestClient[Any], to: str, body: str, caller: str = CALLER, **kwargs: Any) -> Any:
    """A caller's text to `to`, signed as Twilio signs it."""
    response = await post_twilio(client, INBOUND_PATH, inbound_params(to, body, caller, **kwargs))
    assert response.status_code == 200, response.text
    return response


async def dispatch_all(db: asyncpg.Connection, rounds: int = 6) -> int:
    """Run the dispatcher until no due outbox row is left (events publish events). Returns how many ran."""
    total = 0
    for _ in range(rounds):
        rows = await db.fetch("SELECT id FROM outbox_events WHERE dispatched_at IS NULL AND available_at <= now()")
        if not rows:
            break
        for row in rows:
            await dispatch(row["id"])
        total += len(rows)
    return total


async def texted_back(client: AsyncTestClient[Any], db: asyncpg.Connection, tenant: Any, caller: str = CALLER) -> UUID:
    """A missed call from `caller` and its first SMS; returns the caller's thread id."""
    await missed_call(client, tenant.number, caller)
    await dispatch_all(db)
    thread_id: UUID = await db.fetchval(
        "SELECT thread_id FROM conv_messages WHERE kind = 'first_sms' AND to_number = $1 AND twilio_sid IS NOT NULL",
        caller,
    )
    assert thread_id is not None, "the first SMS was not sent"
    return thread_id


async def messages(db: asyncpg.Connection, kind: str | None = None) -> list[asyncpg.Record]:
    if kind is None:
        return await db.fetch("SELECT * FROM conv_messages ORDER BY created_at, id")
    return await db.fetch("SELECT * FROM conv_messages WHERE kind = $1 ORDER BY created_at, id", kind)


async def opted_out(db: asyncpg.Connection, tenant_id: str, phone: str = CALLER) -> bool:
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM conv_opt_outs WHERE tenant_id = $1::uuid AND phone = $2)", tenant_id, phone
        )
    )


def sent_to(fake_twilio: Any, number: str) -> list[dict[str, Any]]:
    """Texts Twilio created for `number` (accepted requests only)."""
    return [m for m in fake_twilio.messages() if m["sid"] and m["form"]["To"] == number]

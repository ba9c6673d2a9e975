"""Callers' texts in-process: signed inbound webhooks into the real app, the real dispatcher, the fake
Twilio API, real Postgres. Threads, media, Unicode, dedupe, opt-out keywords, HELP."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from nmc.conversations.optouts import HELP_KEYWORDS, OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS
from tests.integration.conftest import zone_at_local_hour
from tests.integration.test_first_sms import counter
from tests.integration.test_inbox_support import (
    CALLER,
    INBOUND_PATH,
    dispatch_all,
    inbound_params,
    messages,
    new_message_sid,
    opted_out,
    sent_to,
    text_in,
    texted_back,
)
from tests.integration.twilio_webhooks import missed_call, post_twilio

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


async def events(db: asyncpg.Connection, name: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT payload FROM outbox_events WHERE event_name = $1 ORDER BY created_at", name)
    return [json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"] for r in rows]


async def test_a_reply_joins_the_callers_thread(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    response = await text_in(client, tenant.number, "Can you come   today?\nThe sink leaks")
    assert response.text == EMPTY_TWIML and response.headers["content-type"].startswith("application/xml")

    [inbound] = await messages(db, "inbound")
    assert inbound["thread_id"] == thread_id and inbound["direction"] == "inbound"
    assert (inbound["from_number"], inbound["to_number"]) == (CALLER, tenant.number)
    assert inbound["status"] == "received" and inbound["twilio_sid"].startswith("SM")
    assert inbound["body"] == "Can you come   today?\nThe sink leaks"
    thread = await db.fetchrow("SELECT * FROM conv_threads WHERE id = $1", thread_id)
    assert thread["unread_count"] == 1 and thread["status"] == "open"
    assert thread["last_message_preview"] == "Can you come today? The sink leaks"
    assert thread["last_activity_at"] >= inbound["created_at"] and thread["last_inbound_at"] is not None
    [received] = await events(db, "message.received")
    assert received["thread_id"] == str(thread_id) and received["first_reply"] is True
    assert received["action"] is None

    await text_in(client, tenant.number, "Hello?")  # a second message is not a first reply
    assert (await events(db, "message.received"))[1]["first_reply"] is False
    assert await db.fetchval("SELECT unread_count FROM conv_threads WHERE id = $1", thread_id) == 2
    assert await db.fetchval("SELECT count(*) FROM conv_threads") == 1


async def test_a_text_out_of_the_blue_opens_a_thread(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    await text_in(client, tenant.number, "Do you fix boilers?")
    thread = await db.fetchrow("SELECT * FROM conv_threads")
    assert (thread["caller"], thread["tenant_number"], thread["status"]) == (CALLER, tenant.number, "open")
    assert thread["tenant_id"] == UUID(tenant.id)
    [received] = await events(db, "message.received")
    assert received["first_reply"] is False  # we never texted them: not a reply to a text-back


async def test_media_are_kept_in_order(client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any) -> None:
    tenant = await make_tenant()
    media = [
        ("https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME1", "image/jpeg"),
        ("https://api.twilio.com/2010-04-01/Accounts/AC0/Messages/MM1/Media/ME2", "video/mp4"),
    ]
    await text_in(client, tenant.number, "", media=media)
    [inbound] = await messages(db, "inbound")
    stored = json.loads(inbound["media"]) if isinstance(inbound["media"], str) else inbound["media"]
    assert stored == [{"url": url, "content_type": kind} for url, kind in media]
    assert inbound["twilio_sid"].startswith("MM") and inbound["body"] == ""
    assert await db.fetchval("SELECT last_message_preview FROM conv_threads") == "(2 attachments)"
    assert (await events(db, "message.received"))[0]["num_media"] == 2


async def test_a_1600_character_unicode_body_is_kept_exactly(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    body = ("Ça coûte combien ? 水漏れ 🚿🔧 — ñandú «ok» \u200d👩‍🔧\n" * 60)[:1600]
    assert len(body) == 1600
    await text_in(client, tenant.number, body)
    [inbound] = await messages(db, "inbound")
    assert inbound["body"] == body


async def test_a_duplicate_delivery_makes_one_message(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    from nmc.cli import replay_stored_webhook

    tenant = await make_tenant()
    before = counter("webhook_dedupe_hits_total", provider="twilio")
    params = inbound_params(tenant.number, "Are you open Sunday?", sid=new_message_sid())
    first = await post_twilio(client, INBOUND_PATH, params)
    again = await post_twilio(client, INBOUND_PATH, params)
    assert first.status_code == again.status_code == 200 and first.text == again.text
    assert counter("webhook_dedupe_hits_total", provider="twilio") == before + 1
    webhook_id = await db.fetchval("SELECT id FROM webhook_events WHERE kind = 'sms.inbound'")
    await db.execute("UPDATE conv_threads SET status = 'closed'")  # replayed after the thread was closed
    assert "sms.inbound" in await replay_stored_webhook(webhook_id)
    assert len(await messages(db, "inbound")) == 1
    assert await db.fetchval("SELECT count(*) FROM conv_threads") == 1  # no empty thread opened
    assert len(await events(db, "message.received")) == 1
    assert await db.fetchval("SELECT unread_count FROM conv_threads") == 1
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, tenant.forward_to)) == 1  # one owner alert


async def test_bad_signature_is_refused(client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any) -> None:
    tenant = await make_tenant()
    params = inbound_params(tenant.number, "hi")
    response = await client.post(INBOUND_PATH, data=params, headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert response.status_code == 403
    assert await db.fetchval("SELECT count(*) FROM conv_messages") == 0


async def test_a_text_to_a_number_nobody_owns_is_answered_and_dropped(
    client: AsyncTestClient[Any], db: asyncpg.Connection
) -> None:
    response = await text_in(client, "+15550000000", "hello")
    assert response.text == EMPTY_TWIML
    assert await db.fetchval("SELECT count(*) FROM conv_messages") == 0


# ---------------------------------------------------------------- opt-out keywords
def _spellings() -> list[str]:
    """Every keyword once, in upper, lower or capitalised case with surrounding whitespace."""
    forms = (str.upper, str.lower, lambda w: f"  {w.capitalize()}\n")
    return [forms[i % 3](word) for i, word in enumerate(sorted(OPT_OUT_KEYWORDS))]


@pytest.mark.parametrize("word", _spellings())
async def test_every_opt_out_keyword_in_any_case_opts_the_caller_out(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, word: str
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    await text_in(client, tenant.number, word)
    assert await opted_out(db, tenant.id)
    assert await db.fetchval("SELECT status FROM conv_threads WHERE id = $1", thread_id) == "opted_out"
    audit = await db.fetchrow("SELECT * FROM conv_opt_out_events")
    assert (audit["action"], audit["source"], audit["phone"]) == ("opt_out", "keyword", CALLER)
    assert audit["message_id"] == (await messages(db, "inbound"))[0]["id"]
    [received] = await events(db, "message.received")
    assert received["action"] == "opted_out" and received["first_reply"] is False
    assert len(await events(db, "caller.opted_out")) == 1
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, CALLER)) == 1  # the first SMS; our reply to STOP is none
    assert sent_to(fake_twilio, tenant.forward_to) == []  # and no owner alert


async def test_twilio_opt_out_type_counts_whatever_the_body(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    await text_in(client, tenant.number, "Arrêt", opt_out_type="STOP")  # a keyword set on the Messaging Service
    assert await opted_out(db, tenant.id)
    assert await db.fetchval("SELECT source FROM conv_opt_outs") == "twilio_opt_out_type"


@pytest.mark.parametrize("body", ["stop please", "Please STOP texting", "STOP!", "unsubscribe me", "cancel my visit"])
async def test_a_sentence_with_a_keyword_is_a_message_not_an_opt_out(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, body: str
) -> None:
    tenant = await make_tenant()
    await texted_back(client, db, tenant)
    await text_in(client, tenant.number, body)
    assert not await opted_out(db, tenant.id)
    assert (await events(db, "message.received"))[0]["action"] is None
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, tenant.forward_to)) == 1  # the owner hears about it


@pytest.mark.parametrize("word", [*sorted(OPT_IN_KEYWORDS), "start", " Unstop "])
async def test_start_yes_unstop_opt_back_in(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, word: str
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    await text_in(client, tenant.number, "STOP")
    await text_in(client, tenant.number, word)
    assert not await opted_out(db, tenant.id)
    assert await db.fetchval("SELECT status FROM conv_threads WHERE id = $1", thread_id) == "open"
    audit = [tuple(r) for r in await db.fetch("SELECT action, source FROM conv_opt_out_events ORDER BY created_at")]
    assert audit == [("opt_out", "keyword"), ("opt_in", "keyword")]  # the opt-out stays in the audit
    assert len(await events(db, "caller.opted_in")) == 1
    # texts flow again: an owner reply goes out
    response = await client.post(
        f"/api/threads/{thread_id}/messages", json={"body": "Welcome back"}, headers=tenant.headers
    )
    assert response.status_code == 202
    await dispatch_all(db)
    assert [m["form"]["Body"] for m in sent_to(fake_twilio, CALLER)][-1] == "Welcome back"


async def test_yes_from_a_caller_who_never_opted_out_is_a_plain_answer(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await texted_back(client, db, tenant)
    await text_in(client, tenant.number, "Yes")
    assert await db.fetchval("SELECT count(*) FROM conv_opt_out_events") == 0
    [received] = await events(db, "message.received")
    assert received["action"] is None and received["first_reply"] is True
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, tenant.forward_to)) == 1


@pytest.mark.parametrize("word", [*sorted(HELP_KEYWORDS), "help", " Info "])
async def test_help_and_info_get_the_tenants_help_text_even_in_quiet_hours(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, word: str
) -> None:
    tenant = await make_tenant(name="Ana's Salon", timezone=zone_at_local_hour(23))  # inside 21:00-08:00
    await db.execute(
        "INSERT INTO conv_settings (tenant_id, quiet_hours_start, quiet_hours_end, quiet_hours_policy,"
        " cooldown_minutes, help_text) VALUES ($1, '21:00', '08:00', 'delay', 60, $2)",
        UUID(tenant.id),
        "{business_name} help: call us at the number you texted. Reply STOP to opt out.",
    )
    await text_in(client, tenant.number, word)
    await dispatch_all(db)
    [help_text] = sent_to(fake_twilio, CALLER)
    assert help_text["form"]["Body"] == "Ana's Salon help: call us at the number you texted. Reply STOP to opt out."
    assert help_text["form"]["From"] == tenant.number
    [row] = await messages(db, "help")
    assert row["status"] == "accepted" and row["idempotency_key"].startswith("help:")
    assert not await opted_out(db, tenant.id)


async def test_stop_stops_a_text_that_is_already_queued(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    response = await client.post(
        f"/api/threads/{thread_id}/messages", json={"body": "Are you still there?"}, headers=tenant.headers
    )
    assert response.status_code == 202  # queued, not yet sent
    await text_in(client, tenant.number, "STOP")
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, CALLER)) == 1  # only the first SMS
    [reply] = await messages(db, "reply")
    assert (reply["status"], reply["suppressed_reason"]) == ("suppressed", "opted_out")


async def test_an_opted_out_caller_who_writes_again_is_recorded_without_alerting(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    await text_in(client, tenant.number, "STOP")
    await text_in(client, tenant.number, "actually, what time do you open?")
    assert await db.fetchval("SELECT count(*) FROM conv_threads") == 1
    assert (
        await db.fetchval("SELECT count(*) FROM conv_messages WHERE thread_id = $1 AND kind = 'inbound'", thread_id)
        == 2
    )
    await dispatch_all(db)
    assert sent_to(fake_twilio, tenant.forward_to) == []
    # the owner cannot reply to an opted-out caller
    response = await client.post(f"/api/threads/{thread_id}/messages", json={"body": "9am"}, headers=tenant.headers)
    assert response.status_code == 409 and "opted out" in response.json()["detail"]
    # a missed call from them later is not texted, and lands in the same (opted-out) thread
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    assert len(sent_to(fake_twilio, CALLER)) == 1
    assert await db.fetchval("SELECT count(DISTINCT thread_id) FROM conv_messages") == 1

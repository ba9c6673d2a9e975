"""The owner's inbox over REST (Clerk token, in-process app, real Postgres): listing with filters and
cursor pagination, a thread with its messages, read/close/reopen, messaging settings, OpenAPI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.integration.test_inbox_support import CALLER, dispatch_all, messages, text_in, texted_back
from tests.integration.twilio_webhooks import missed_call


async def seed_threads(db: asyncpg.Connection, tenant_id: str, n: int, **columns: Any) -> list[UUID]:
    """`n` threads, the first the most recently active (one second apart)."""
    now = datetime.now(UTC)
    ids = []
    for i in range(n):
        thread_id = uuid4()
        await db.execute(
            "INSERT INTO conv_threads (id, tenant_id, caller, tenant_number, status, last_activity_at, unread_count,"
            " last_message_preview) VALUES ($1, $2::uuid, $3, '+15550001000', $4, $5, $6, $7)",
            thread_id,
            tenant_id,
            f"+1555100{i:04d}",
            columns.get("status", "closed"),
            now - timedelta(seconds=i),
            columns.get("unread_count", 0),
            f"message {i}",
        )
        ids.append(thread_id)
    return ids


async def list_threads(client: AsyncTestClient[Any], tenant: Any, **params: Any) -> Any:
    response = await client.get("/api/threads", params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_threads_are_listed_newest_activity_first_page_by_page(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    other = await make_tenant(name="Other Shop")
    expected = await seed_threads(db, tenant.id, 7)
    await seed_threads(db, other.id, 3)
    # two threads with the same activity time: the id breaks the tie, and no page repeats or skips one
    await db.execute("UPDATE conv_threads SET last_activity_at = (SELECT last_activity_at FROM conv_threads"
                     " WHERE id = $1) WHERE id = $2", expected[2], expected[3])  # fmt: skip
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await list_threads(client, tenant, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 7
    assert set(seen) == {str(i) for i in expected}
    rows = await db.fetch(
        "SELECT id FROM conv_threads WHERE tenant_id = $1::uuid ORDER BY last_activity_at DESC, id DESC", tenant.id
    )
    assert seen == [str(r["id"]) for r in rows]
    first = (await list_threads(client, tenant, limit=1))["items"][0]
    assert first["last_message_preview"] == "message 0" and first["caller"] == "+15551000000"


async def test_threads_filter_by_status_and_unread(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    await seed_threads(db, tenant.id, 2, status="closed")
    booked = await seed_threads(db, tenant.id, 1, status="booked")
    unread = await seed_threads(db, tenant.id, 1, status="opted_out", unread_count=2)
    assert [i["id"] for i in (await list_threads(client, tenant, status="booked"))["items"]] == [str(booked[0])]
    for spelling in ("opted_out", "opted-out"):
        assert [i["id"] for i in (await list_threads(client, tenant, status=spelling))["items"]] == [str(unread[0])]
    assert [i["id"] for i in (await list_threads(client, tenant, unread="true"))["items"]] == [str(unread[0])]
    assert len((await list_threads(client, tenant, unread="false"))["items"]) == 3
    assert (await list_threads(client, tenant, status="open"))["items"] == []
    bad = await client.get("/api/threads", params={"status": "archived"}, headers=tenant.headers)
    assert bad.status_code == 422 and bad.json()["field"] == "status"
    garbage = await client.get("/api/threads", params={"cursor": "not-a-cursor"}, headers=tenant.headers)
    assert garbage.status_code == 422 and garbage.json()["field"] == "cursor"


async def test_a_thread_shows_its_conversation_but_not_owner_alerts(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    await text_in(client, tenant.number, "photo of the leak", media=[("https://example.test/m/1", "image/png")])
    await client.post(f"/api/threads/{thread_id}/messages", json={"body": "On it"}, headers=tenant.headers)
    await dispatch_all(db)
    assert len(await messages(db, "owner_alert")) == 1
    response = await client.get(f"/api/threads/{thread_id}", headers=tenant.headers)
    assert response.status_code == 200
    detail = response.json()
    assert detail["id"] == str(thread_id) and detail["caller"] == CALLER and detail["status"] == "open"
    assert [(m["kind"], m["direction"]) for m in detail["messages"]] == [
        ("first_sms", "outbound"),
        ("inbound", "inbound"),
        ("reply", "outbound"),
    ]
    inbound = detail["messages"][1]
    assert inbound["media"] == [{"url": "https://example.test/m/1", "content_type": "image/png"}]
    assert inbound["status"] == "received" and detail["messages"][2]["status"] == "accepted"
    assert detail["earlier_messages_cursor"] is None

    latest = (await client.get(f"/api/threads/{thread_id}", params={"limit": 2}, headers=tenant.headers)).json()
    assert [m["kind"] for m in latest["messages"]] == ["inbound", "reply"]
    older = await client.get(
        f"/api/threads/{thread_id}",
        params={"limit": 2, "before": latest["earlier_messages_cursor"]},
        headers=tenant.headers,
    )
    assert [m["kind"] for m in older.json()["messages"]] == ["first_sms"]
    assert older.json()["earlier_messages_cursor"] is None


async def test_unknown_thread_is_404(client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any) -> None:
    tenant = await make_tenant()
    missing = uuid4()
    for method, path in [
        ("GET", f"/api/threads/{missing}"),
        ("POST", f"/api/threads/{missing}/read"),
        ("POST", f"/api/threads/{missing}/close"),
        ("POST", f"/api/threads/{missing}/reopen"),
    ]:
        response = await client.request(method, path, headers=tenant.headers)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/problem+json")
    reply = await client.post(f"/api/threads/{missing}/messages", json={"body": "hi"}, headers=tenant.headers)
    assert reply.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [({"body": ""}, "body"), ({"body": "x" * 1601}, "body"), ({"text": "hi"}, "body"), ({"body": 3}, "body")],
)
async def test_a_bad_reply_is_refused(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, body: dict[str, Any], field: str
) -> None:
    tenant = await make_tenant()
    await text_in(client, tenant.number, "hi")
    thread_id = await db.fetchval("SELECT id FROM conv_threads")
    response = await client.post(f"/api/threads/{thread_id}/messages", json=body, headers=tenant.headers)
    assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert await messages(db, "reply") == []


async def test_a_whitespace_reply_is_refused(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    await text_in(client, tenant.number, "hi")
    thread_id = await db.fetchval("SELECT id FROM conv_threads")
    response = await client.post(f"/api/threads/{thread_id}/messages", json={"body": " \n "}, headers=tenant.headers)
    assert response.status_code == 422 and response.json()["field"] == "body"


async def test_read_close_reopen(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await text_in(client, tenant.number, "one")
    await text_in(client, tenant.number, "two")
    thread_id = await db.fetchval("SELECT id FROM conv_threads")
    assert (await list_threads(client, tenant, unread="true"))["items"][0]["unread_count"] == 2

    read = await client.post(f"/api/threads/{thread_id}/read", headers=tenant.headers)
    assert read.status_code == 200 and read.json()["unread_count"] == 0
    closed = await client.post(f"/api/threads/{thread_id}/close", headers=tenant.headers)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    reopened = await client.post(f"/api/threads/{thread_id}/reopen", headers=tenant.headers)
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    again = await client.post(f"/api/threads/{thread_id}/reopen", headers=tenant.headers)
    assert again.status_code == 200 and again.json()["status"] == "open"  # already open: no change

    # after closing, the caller's next text opens a new thread; the old one cannot be reopened over it
    await client.post(f"/api/threads/{thread_id}/close", headers=tenant.headers)
    await text_in(client, tenant.number, "three")
    assert await db.fetchval("SELECT count(*) FROM conv_threads") == 2
    conflict = await client.post(f"/api/threads/{thread_id}/reopen", headers=tenant.headers)
    assert conflict.status_code == 409 and "newer open thread" in conflict.json()["detail"]
    assert await db.fetchval("SELECT status FROM conv_threads WHERE id = $1", thread_id) == "closed"


async def test_reopening_the_thread_of_an_opted_out_caller_keeps_it_opted_out(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    await text_in(client, tenant.number, "STOP")
    thread_id = await db.fetchval("SELECT id FROM conv_threads")
    await client.post(f"/api/threads/{thread_id}/close", headers=tenant.headers)
    response = await client.post(f"/api/threads/{thread_id}/reopen", headers=tenant.headers)
    assert response.json()["status"] == "opted_out"


# ---------------------------------------------------------------- settings
async def test_settings_default_then_replace(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(name="Joe's Plumbing")
    initial = (await client.get("/api/settings/messaging", headers=tenant.headers)).json()
    assert initial["first_sms_business_hours"] is None and initial["quiet_hours_start"] == "21:00"
    assert initial["follow_up_delay_minutes"] is None and initial["owner_alerts_enabled"] is True
    assert "{business_name}" in initial["defaults"]["first_sms_business_hours"]
    assert initial["defaults"]["merge_fields"] == ["booking_prompt", "business_name", "caller_number"]

    document = {
        "first_sms_business_hours": "{business_name} here, sorry we missed you! Reply STOP to opt out.",
        "follow_up_template": "Still need a hand, {caller_number}?",
        "follow_up_delay_minutes": 90,
        "help_text": "{business_name}: call us back anytime.",
        "owner_alert_number": "+15551239876",
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "cooldown_minutes": 0,
    }
    response = await client.put("/api/settings/messaging", json=document, headers=tenant.headers)
    assert response.status_code == 200, response.text
    stored = (await client.get("/api/settings/messaging", headers=tenant.headers)).json()
    for key, value in document.items():
        assert stored[key] == value, key
    assert stored["quiet_hours_policy"] == "delay" and stored["updated_at"] is not None

    await missed_call(client, tenant.number, CALLER)  # the first SMS uses the new template
    await dispatch_all(db)
    assert (
        fake_twilio.messages()[0]["form"]["Body"] == "Joe's Plumbing here, sorry we missed you! Reply STOP to opt out."
    )
    assert await db.fetchval("SELECT follow_up_due_at FROM conv_threads") is not None

    reset = await client.put("/api/settings/messaging", json={}, headers=tenant.headers)
    assert reset.json()["first_sms_business_hours"] is None and reset.json()["quiet_hours_end"] == "08:00"


@pytest.mark.parametrize(
    ("document", "field", "detail"),
    [
        ({"follow_up_template": "Hi {first_name}, still there?"}, "follow_up_template", "{first_name}"),
        ({"help_text": "Call {business_name} at {phone}"}, "help_text", "{phone}"),
        ({"first_sms_after_hours": "We're closed, {business_name}. STOP to end {x"}, "first_sms_after_hours", ""),
        ({"booking_prompt": "Book at {business_name}"}, "booking_prompt", "{business_name}"),
        ({"first_sms_business_hours": "Sorry we missed you, {caller_number}!"}, "first_sms_business_hours", "STOP"),
        ({"quiet_hours_start": "22:00", "quiet_hours_end": None}, "quiet_hours_end", "both"),
    ],
)
async def test_invalid_settings_are_422_naming_the_field(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    document: dict[str, Any],
    field: str,
    detail: str,
) -> None:
    tenant = await make_tenant()
    response = await client.put("/api/settings/messaging", json=document, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and detail in response.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM conv_settings") == 0


@pytest.mark.parametrize(
    "document",
    [
        {"quiet_hours_start": "25:00"},
        {"follow_up_delay_minutes": 1},
        {"owner_alert_number": "5551234"},
        {"quiet_hours_policy": "maybe"},
        {"cooldown": 5},
    ],
)
async def test_settings_that_fail_the_schema_are_422_naming_the_field(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, document: dict[str, Any]
) -> None:
    tenant = await make_tenant()
    response = await client.put("/api/settings/messaging", json=document, headers=tenant.headers)
    assert response.status_code == 422 and response.json()["field"] == next(iter(document)), response.text
    assert await db.fetchval("SELECT count(*) FROM conv_settings") == 0


async def test_the_inbox_is_in_the_openapi_schema(client: AsyncTestClient[Any], db: asyncpg.Connection) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path, methods in {
        "/api/threads": {"get"},
        "/api/threads/{thread_id}": {"get"},
        "/api/threads/{thread_id}/messages": {"post"},
        "/api/threads/{thread_id}/read": {"post"},
        "/api/threads/{thread_id}/close": {"post"},
        "/api/threads/{thread_id}/reopen": {"post"},
        "/api/settings/messaging": {"get", "put"},
        "/api/kpis": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    assert "/webhooks/twilio/sms" not in paths  # webhooks stay out of the public schema
    listing = paths["/api/threads"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"status", "unread", "cursor", "limit"}
    assert listing["security"] == [{"ClerkSession": []}]
    assert "202" in paths["/api/threads/{thread_id}/messages"]["post"]["responses"]

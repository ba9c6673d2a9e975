"""Lead KPIs: a projection of the domain events (conv_kpi_facts), read over REST per tenant and range
of local days, idempotent per event, rebuilt from the outbox history by `nmc kpis rebuild`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from litestar.testing import AsyncTestClient

from nmc.events.catalog import CallMissed, FirstSmsSent
from nmc.kpis.projection import project
from tests.conftest import run_cli
from tests.integration.test_inbox_support import CALLER, dispatch_all, text_in, texted_back
from tests.integration.twilio_webhooks import missed_call

CALLERS = ("+15557654001", "+15557654002", "+15557654003", "+15557654004")


async def kpis(client: AsyncTestClient[Any], tenant: Any, start: date, end: date) -> dict[str, Any]:
    response = await client.get("/api/kpis", params={"start": str(start), "end": str(end)}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def today() -> date:
    return datetime.now(UTC).date()  # the test tenants' zones are within a day of UTC


async def lead_traffic(client: AsyncTestClient[Any], db: asyncpg.Connection, tenant: Any) -> None:
    """4 missed calls; 3 texted back (one caller opted out earlier); 2 reply; 1 of them then STOPs."""
    await text_in(client, tenant.number, "STOP", caller=CALLERS[3])  # an opt-out before any call
    for caller in CALLERS[:3]:
        await texted_back(client, db, tenant, caller)
    await missed_call(client, tenant.number, CALLERS[3])
    await text_in(client, tenant.number, "Yes, tomorrow works", caller=CALLERS[0])
    await text_in(client, tenant.number, "and the sink", caller=CALLERS[0])  # not a second reply
    await text_in(client, tenant.number, "STOP", caller=CALLERS[1])  # a STOP is not a reply
    await text_in(client, tenant.number, "How much?", caller=CALLERS[2])
    await dispatch_all(db)


async def test_kpis_count_the_leads_of_the_range(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    other = await make_tenant(name="Other Shop")
    await lead_traffic(client, db, tenant)
    await texted_back(client, db, other, CALLER)  # another tenant's lead is not ours
    found = await kpis(client, tenant, today() - timedelta(days=1), today() + timedelta(days=1))
    latencies = [
        r["latency_ms"]
        for r in await db.fetch(
            "SELECT latency_ms FROM conv_messages WHERE tenant_id = $1::uuid AND kind = 'first_sms'"
            " AND latency_ms IS NOT NULL ORDER BY latency_ms",
            tenant.id,
        )
    ]
    assert len(latencies) == 3
    assert found["missed_calls"] == 4 and found["texted_back"] == 3
    assert found["replies"] == 2 and found["reply_rate"] == round(2 / 3, 4)
    assert found["opt_outs"] == 2 and found["bookings"] == 0
    assert abs(found["median_time_to_first_sms_ms"] - latencies[1]) < 0.01
    assert latencies[1] <= found["p95_time_to_first_sms_ms"] <= latencies[2]

    yesterday = await kpis(client, tenant, today() - timedelta(days=3), today() - timedelta(days=2))
    assert yesterday["missed_calls"] == 0 and yesterday["median_time_to_first_sms_ms"] is None
    assert yesterday["reply_rate"] is None
    theirs = await kpis(client, other, today() - timedelta(days=1), today() + timedelta(days=1))
    assert (theirs["missed_calls"], theirs["texted_back"], theirs["replies"]) == (1, 1, 0)


async def test_days_are_the_tenants_local_days(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant(timezone="America/Los_Angeles")
    # 2026-03-08 23:30 in Los Angeles (after the DST switch, UTC-7) is 06:30 UTC on the 9th
    late_evening = datetime(2026, 3, 9, 6, 30, tzinfo=UTC)
    event = CallMissed(
        tenant_id=UUID(tenant.id),
        call_id=uuid4(),
        call_sid="CA" + "1" * 32,
        caller=CALLER,
        tenant_number=tenant.number,
        dial_status="no-answer",
        webhook_received_at=late_evening,
        occurred_at=late_evening,
        correlation_id="test",
    )
    await project(event)
    await project(event)  # delivered twice: counted once
    assert (await kpis(client, tenant, date(2026, 3, 8), date(2026, 3, 8)))["missed_calls"] == 1
    assert (await kpis(client, tenant, date(2026, 3, 9), date(2026, 3, 9)))["missed_calls"] == 0
    found = await kpis(client, tenant, date(2026, 3, 1), date(2026, 3, 31))
    assert found["missed_calls"] == 1 and found["timezone"] == "America/Los_Angeles"


async def test_a_bad_range_is_refused(client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any) -> None:
    tenant = await make_tenant()
    backwards = await client.get(
        "/api/kpis", params={"start": "2026-03-02", "end": "2026-03-01"}, headers=tenant.headers
    )
    assert backwards.status_code == 422 and backwards.json()["field"] == "end"
    too_long = await client.get(
        "/api/kpis", params={"start": "2025-01-01", "end": "2026-03-01"}, headers=tenant.headers
    )
    assert too_long.status_code == 422
    missing = await client.get("/api/kpis", params={"start": "2026-03-01"}, headers=tenant.headers)
    assert missing.status_code == 422 and missing.json()["field"] == "end"
    garbage = await client.get("/api/kpis", params={"start": "x", "end": "y"}, headers=tenant.headers)
    assert garbage.status_code == 422 and garbage.json()["field"] == "start"


async def test_rebuild_from_the_outbox_reproduces_the_projection(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await lead_traffic(client, db, tenant)
    window = (today() - timedelta(days=1), today() + timedelta(days=1))
    before = await kpis(client, tenant, *window)
    facts = await db.fetchval("SELECT count(*) FROM conv_kpi_facts")

    await db.execute("TRUNCATE conv_kpi_facts")
    assert (await kpis(client, tenant, *window))["missed_calls"] == 0
    result = run_cli("kpis", "rebuild", "--all")
    assert f"{facts} facts written" in result.stdout
    assert await kpis(client, tenant, *window) == before

    # by default only the window the outbox still holds is replaced: older facts stay
    old = FirstSmsSent(
        tenant_id=UUID(tenant.id),
        call_id=uuid4(),
        message_id=uuid4(),
        latency_ms=12.5,
        occurred_at=datetime.now(UTC) - timedelta(days=60),
        correlation_id="test",
    )
    await project(old)  # its outbox row was purged long ago (retention)
    result = run_cli("kpis", "rebuild")
    assert "rebuilt facts from" in result.stdout
    assert await db.fetchval("SELECT count(*) FROM conv_kpi_facts WHERE event_id = $1", old.event_id) == 1
    assert await kpis(client, tenant, *window) == before
    assert await db.fetchval("SELECT count(*) FROM conv_kpi_facts") == facts + 1


async def test_a_confirmed_booking_counts_and_books_the_callers_thread(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    from nmc.events.catalog import BookingConfirmed
    from nmc.events.outbox import publish_on

    tenant = await make_tenant()
    await db.execute(
        "INSERT INTO conv_settings (tenant_id, quiet_hours_start, quiet_hours_end, quiet_hours_policy,"
        " cooldown_minutes, follow_up_delay_minutes) VALUES ($1, NULL, NULL, 'delay', 60, 30)",
        UUID(tenant.id),
    )
    thread_id = await texted_back(client, db, tenant)
    assert await db.fetchval("SELECT follow_up_due_at FROM conv_threads WHERE id = $1", thread_id) is not None
    starts = datetime.now(UTC) + timedelta(days=2)
    booked = BookingConfirmed(
        tenant_id=UUID(tenant.id),
        booking_id=uuid4(),
        resource_id=uuid4(),
        job_type_id=uuid4(),
        starts_at=starts,
        ends_at=starts + timedelta(hours=1),
        source="sms",
        customer_phone=CALLER,
        correlation_id="test",
    )
    async with db.transaction():
        await publish_on(db, booked)
    await dispatch_all(db)
    thread = await db.fetchrow("SELECT * FROM conv_threads WHERE id = $1", thread_id)
    assert thread["status"] == "booked" and thread["follow_up_due_at"] is None
    found = await kpis(client, tenant, today() - timedelta(days=1), today() + timedelta(days=1))
    assert found["bookings"] == 1
    await text_in(client, tenant.number, "See you Thursday!")  # a booked thread is done: a new one opens
    assert await db.fetchval("SELECT count(*) FROM conv_threads WHERE status = 'open'") == 1
    assert await db.fetchval("SELECT count(*) FROM conv_threads") == 2

"""Booking over real HTTP against the real web process (and its worker), with a fake Clerk token."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nmc.identity import TenantCreate, create_tenant
from nmc.worker import HOLD_GC_SCHEDULE
from tests.e2e.conftest import Stack
from tests.fakes.clerk import FakeClerk

pytestmark = pytest.mark.e2e
ZONE = ZoneInfo("America/Chicago")


async def shop(stack: Stack, clerk: FakeClerk, n: int) -> tuple[httpx.AsyncClient, dict[str, str]]:
    """A tenant with a Clerk org, a technician and a one-hour job type, made over HTTP."""
    org_id = f"org_e2e_booking_{n}"
    await create_tenant(
        TenantCreate(
            name=f"Booking Shop {n}",
            twilio_number=f"+1555400{n:04d}",
            forwarding_number="+15559990000",
            timezone=ZONE.key,
            clerk_org_id=org_id,
        )
    )
    client = httpx.AsyncClient(
        base_url=stack.base_url,
        headers={"Authorization": f"Bearer {clerk.mint(org_id=org_id, exp_in=600)}"},
        timeout=10,
    )
    resource = await client.post("/api/resources", json={"name": "Ana"})
    assert resource.status_code == 201, resource.text
    job_type = await client.post(
        "/api/job-types", json={"name": "Repair", "duration_minutes": 60, "min_notice_minutes": 0}
    )
    assert job_type.status_code == 201, job_type.text
    return client, {"resource_id": resource.json()["id"], "job_type_id": job_type.json()["id"]}


def next_monday_at(hour: int) -> datetime:
    day = datetime.now(ZONE).date() + timedelta(days=7)
    day += timedelta(days=-day.weekday() + 7)
    return datetime.combine(day, time(hour), tzinfo=ZONE)


async def test_book_an_offered_slot_over_http(stack: Stack, clerk: FakeClerk, db: asyncpg.Connection) -> None:
    client, ids = await shop(stack, clerk, 1)
    try:
        start = next_monday_at(8)
        offered = await client.get(
            "/api/availability",
            params={
                "job_type_id": ids["job_type_id"],
                "start": start.isoformat(),
                "end": (start + timedelta(hours=12)).isoformat(),
            },
        )
        assert offered.status_code == 200, offered.text
        (resource,) = offered.json()["resources"]
        first = resource["slots"][0]
        assert datetime.fromisoformat(first["start"]) == start  # 08:00 local (Chicago)

        held = await client.post("/api/holds", json={**ids, "start": first["start"]})
        assert held.status_code == 201, held.text
        booked = await client.post("/api/bookings", json={"hold_id": held.json()["id"], "customer_name": "Dee"})
        assert booked.status_code == 201, booked.text
        assert booked.json()["start"] == held.json()["start"]

        listed = await client.get("/api/bookings")
        assert [b["id"] for b in listed.json()] == [booked.json()["id"]]
        again = await client.get(
            "/api/availability",
            params={"job_type_id": ids["job_type_id"], "start": first["start"], "end": first["end"]},
        )
        assert again.json()["resources"][0]["slots"] == []
    finally:
        await client.aclose()

    # The worker registered the hold GC next to the outbox dispatcher.
    assert await db.fetchval(
        "SELECT count(*) FROM pgqueuer_schedules WHERE entrypoint = 'hold_gc' AND expression = $1", HOLD_GC_SCHEDULE
    )


async def test_two_clients_racing_for_one_slot_get_one_201_and_one_409(
    stack: Stack, clerk: FakeClerk, db: asyncpg.Connection
) -> None:
    owner, ids = await shop(stack, clerk, 2)
    token = owner.headers["Authorization"]
    body = {**ids, "start": next_monday_at(10).isoformat()}
    # Two independent clients (two connections), released together.
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": token}, timeout=10) as rival:
            first, second = await asyncio.gather(
                owner.post("/api/bookings", json=body), rival.post("/api/bookings", json=body)
            )
        metrics = (await owner.get("/metrics")).text
    finally:
        await owner.aclose()
    outcomes = sorted([first, second], key=lambda r: r.status_code)
    assert [r.status_code for r in outcomes] == [201, 409], [r.text for r in outcomes]
    won, lost = (r.json() for r in outcomes)
    assert lost["conflict"] == {"kind": "booking", "start": won["start"], "end": won["end"]}
    assert await db.fetchval("SELECT count(*) FROM sched_bookings WHERE status = 'confirmed'") == 1
    assert sample(metrics, "scheduling_book_conflict_total") >= 1
    assert sample(metrics, "booking_post_p95_ms") > 0


def sample(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name:
                return float(item.value)
    raise AssertionError(f"{name} missing from /metrics")

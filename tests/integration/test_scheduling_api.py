"""Scheduling REST on the real app and database: CRUD, availability, holds, bookings, problems, events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from nmc.ops import run_named_query

NY = "America/New_York"
ZONE = ZoneInfo(NY)
Client = AsyncTestClient[Litestar]


def next_weekday(weekday: int, at_least_days: int = 7) -> date:
    """A date with `weekday` (0 = Monday) at least `at_least_days` ahead: always bookable."""
    day = datetime.now(ZONE).date() + timedelta(days=at_least_days)
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def local(day: date, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=ZONE)


def iso(value: datetime) -> str:
    return value.isoformat()


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass
class Shop:
    headers: dict[str, str]
    tenant_id: str
    resource_id: str
    job_type_id: str


async def make_shop(client: Client, make_tenant: Any, **job_type: Any) -> Shop:
    """A tenant in New York with one technician (Mon-Fri 08:00-17:00) and a one-hour job type."""
    tenant = await make_tenant(timezone=NY)
    response = await client.post("/api/resources", json={"name": "Ana"}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    resource_id = response.json()["id"]
    body = {"name": "Repair", "duration_minutes": 60, "min_notice_minutes": 0, **job_type}
    response = await client.post("/api/job-types", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return Shop(tenant.headers, tenant.id, resource_id, response.json()["id"])


async def starts(client: Client, shop: Shop, day: date, **params: Any) -> list[datetime]:
    query = {
        "job_type_id": shop.job_type_id,
        "start": iso(local(day, 0)),
        "end": iso(local(day + timedelta(days=1), 0)),
        "resource_id": shop.resource_id,
        **params,
    }
    response = await client.get("/api/availability", params=query, headers=shop.headers)
    assert response.status_code == 200, response.text
    (resource,) = response.json()["resources"]
    return [parse(slot["start"]) for slot in resource["slots"]]


async def book(client: Client, shop: Shop, at: datetime, **extra: Any) -> Any:
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(at), **extra}
    return await client.post("/api/bookings", json=body, headers=shop.headers)


async def hold(client: Client, shop: Shop, start: datetime) -> Any:
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(start)}
    return await client.post("/api/holds", json=body, headers=shop.headers)


async def events(db: asyncpg.Connection, name: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT payload FROM outbox_events WHERE event_name = $1 ORDER BY created_at", name)
    return [json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"] for r in rows]


async def expire_hold(db: asyncpg.Connection, hold_id: str) -> None:
    """Make a hold expired without waiting (both the hold row and its allocation)."""
    await db.execute(
        "UPDATE sched_allocations SET expires_at = now() - interval '1 second' "
        "WHERE id = (SELECT allocation_id FROM sched_holds WHERE id = $1::uuid)",
        hold_id,
    )
    await db.execute("UPDATE sched_holds SET expires_at = now() - interval '1 second' WHERE id = $1::uuid", hold_id)


def metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exposed")


# ------------------------------------------------------------------------------------ resources & co.


async def test_resource_crud_with_weekly_hours_and_exceptions(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant(timezone=NY)
    created = await client.post(
        "/api/resources",
        json={
            "name": "Van 1",
            "kind": "truck",
            "weekly_hours": {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "sat": [["22:00", "06:00"]]},
            "exceptions": [{"date": "2027-12-24", "hours": [["08:00", "12:00"]], "note": "Christmas Eve"}],
        },
        headers=tenant.headers,
    )
    assert created.status_code == 201, created.text
    resource = created.json()
    assert resource["kind"] == "truck"
    assert resource["weekly_hours"]["mon"] == [["08:00", "12:00"], ["13:00", "17:00"]]
    assert resource["weekly_hours"]["sat"] == [["22:00", "06:00"]]
    assert resource["weekly_hours"]["tue"] == []
    assert resource["exceptions"] == [{"date": "2027-12-24", "hours": [["08:00", "12:00"]], "note": "Christmas Eve"}]
    path = f"/api/resources/{resource['id']}"

    # Exceptions are replaced as a list: the same date is updated in place, a new one added, one dropped.
    patched = await client.patch(
        path,
        json={
            "active": False,
            "exceptions": [{"date": "2027-12-24", "hours": []}, {"date": "2027-12-31", "hours": [["09:00", "13:00"]]}],
        },
        headers=tenant.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["active"] is False
    assert [e["date"] for e in patched.json()["exceptions"]] == ["2027-12-24", "2027-12-31"]
    assert patched.json()["exceptions"][0]["hours"] == []
    assert (await client.get(path, headers=tenant.headers)).json() == patched.json()
    listed = await client.get("/api/resources", headers=tenant.headers)
    assert [r["id"] for r in listed.json()] == [resource["id"]]

    duplicate = await client.post("/api/resources", json={"name": "Van 1"}, headers=tenant.headers)
    assert duplicate.status_code == 409

    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    assert (await client.get(path, headers=tenant.headers)).status_code == 404


async def test_a_new_resource_works_mon_to_fri_8_to_5(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    response = await client.post("/api/resources", json={"name": "Bo"}, headers=tenant.headers)
    hours = response.json()["weekly_hours"]
    assert hours["mon"] == hours["fri"] == [["08:00", "17:00"]]
    assert hours["sat"] == hours["sun"] == []


async def test_unusable_input_is_422_naming_the_field(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    cases = [
        ("/api/resources", {"name": "A", "weekly_hours": {"mon": [["09:00", "09:00"]]}}, "weekly_hours.mon"),
        ("/api/resources", {"name": "A", "weekly_hours": {"mon": [["24:00", "09:00"]]}}, "weekly_hours.mon"),
        ("/api/resources", {"name": "A", "weekly_hours": {"mon": [["9am", "5pm"]]}}, "weekly_hours"),
        (
            "/api/resources",
            {"name": "A", "exceptions": [{"date": "2027-01-01"}, {"date": "2027-01-01"}]},
            "exceptions",
        ),
        ("/api/resources", {"name": "A", "colour": "red"}, "colour"),
        ("/api/resources", {"name": ""}, "name"),
        ("/api/job-types", {"name": "X", "duration_minutes": 0}, "duration_minutes"),
        ("/api/job-types", {"name": "X", "duration_minutes": 30, "buffer_after_minutes": -5}, "buffer_after_minutes"),
    ]
    for path, body, field in cases:
        response = await client.post(path, json=body, headers=tenant.headers)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["field"] == field, (body, response.json())


async def test_job_type_crud(client: Client, make_tenant: Any) -> None:
    tenant = await make_tenant()
    body = {"name": "Install", "duration_minutes": 120, "buffer_before_minutes": 30, "buffer_after_minutes": 15}
    created = await client.post("/api/job-types", json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    job_type = created.json()
    assert (job_type["duration_minutes"], job_type["min_notice_minutes"], job_type["active"]) == (120, 60, True)
    path = f"/api/job-types/{job_type['id']}"
    patched = await client.patch(path, json={"duration_minutes": 90, "active": False}, headers=tenant.headers)
    assert patched.status_code == 200
    assert (patched.json()["duration_minutes"], patched.json()["buffer_before_minutes"]) == (90, 30)
    assert [j["name"] for j in (await client.get("/api/job-types", headers=tenant.headers)).json()] == ["Install"]
    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    assert (await client.get(path, headers=tenant.headers)).status_code == 404


async def test_busy_block_crud_and_validation(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(0)
    body = {
        "resource_id": shop.resource_id,
        "start": iso(local(day, 9)),
        "end": iso(local(day, 10)),
        "title": "Dentist",
    }
    created = await client.post("/api/busy-blocks", json=body, headers=shop.headers)
    assert created.status_code == 201, created.text
    block = created.json()
    assert parse(block["start"]) == local(day, 9)
    assert parse(block["end"]) == local(day, 10)
    assert block["source"] == "api"
    path = f"/api/busy-blocks/{block['id']}"

    moved = await client.patch(path, json={"end": iso(local(day, 11))}, headers=shop.headers)
    assert moved.status_code == 200
    assert parse(moved.json()["end"]) == local(day, 11)
    window = {"start": iso(local(day, 10, 30)), "end": iso(local(day, 12)), "resource_id": shop.resource_id}
    assert [b["id"] for b in (await client.get("/api/busy-blocks", params=window, headers=shop.headers)).json()] == [
        block["id"]
    ]
    later = {"start": iso(local(day, 11)), "end": iso(local(day, 12))}
    assert (await client.get("/api/busy-blocks", params=later, headers=shop.headers)).json() == []  # half-open

    backwards = await client.patch(path, json={"end": iso(local(day, 8))}, headers=shop.headers)
    assert backwards.status_code == 422
    assert backwards.json()["field"] == "end"
    naive = await client.post("/api/busy-blocks", json={**body, "start": "2027-01-01T09:00:00"}, headers=shop.headers)
    assert (naive.status_code, naive.json()["field"]) == (422, "start")
    stranger = await client.post(
        "/api/busy-blocks", json={**body, "resource_id": "00000000-0000-0000-0000-000000000000"}, headers=shop.headers
    )
    assert (stranger.status_code, stranger.json()["field"]) == (422, "resource_id")

    assert (await client.delete(path, headers=shop.headers)).status_code == 204
    assert (await client.get(path, headers=shop.headers)).status_code == 404


# ------------------------------------------------------------------------------------ availability


async def test_availability_is_working_hours_minus_bookings_live_holds_and_busy_blocks(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(1)  # a Tuesday
    free = await starts(client, shop, day)
    assert free[0] == local(day, 8)
    assert free[-1] == local(day, 16)  # a one-hour job ends by 17:00
    assert len(free) == 33  # 08:00 … 16:00 every 15 minutes
    assert all(s.astimezone(ZONE).minute % 15 == 0 for s in free)

    assert (await book(client, shop, local(day, 10))).status_code == 201
    held = await hold(client, shop, local(day, 13))
    assert held.status_code == 201
    busy = {"resource_id": shop.resource_id, "start": iso(local(day, 15)), "end": iso(local(day, 15, 30))}
    assert (await client.post("/api/busy-blocks", json=busy, headers=shop.headers)).status_code == 201

    free = await starts(client, shop, day)
    taken = [(local(day, 9, 15), local(day, 10, 45)), (local(day, 12, 15), local(day, 13, 45))]
    taken.append((local(day, 14, 15), local(day, 15, 15)))
    for start, end in taken:
        assert not [s for s in free if start <= s <= end], (start, end)
    assert local(day, 9) in free  # back to back with the 10:00 booking
    assert local(day, 11) in free
    assert local(day, 15, 30) in free

    # An expired hold frees its slot at once, before any GC.
    await expire_hold(db, held.json()["id"])
    assert local(day, 13) in await starts(client, shop, day)


async def test_buffers_extend_what_a_booking_blocks(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant, buffer_before_minutes=15, buffer_after_minutes=30)
    day = next_weekday(2)
    assert (await book(client, shop, local(day, 10))).status_code == 201  # blocks 09:45-11:30
    free = await starts(client, shop, day)
    # The next job's own 15-minute lead-in must not touch 11:30; the previous one's 30-minute tail 09:45.
    assert local(day, 11, 45) in free
    assert local(day, 11, 30) not in free
    assert local(day, 8, 15) in free
    assert local(day, 8, 30) not in free
    conflict = await book(client, shop, local(day, 11, 30))
    assert conflict.status_code == 409
    assert parse(conflict.json()["conflict"]["end"]) == local(day, 11, 30)
    assert conflict.json()["conflict"]["kind"] == "booking"


async def test_date_exceptions_replace_the_weekly_hours(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant)
    closed, short = next_weekday(0), next_weekday(1)
    exceptions = [{"date": closed.isoformat(), "hours": []}, {"date": short.isoformat(), "hours": [["12:00", "14:00"]]}]
    response = await client.patch(
        f"/api/resources/{shop.resource_id}", json={"exceptions": exceptions}, headers=shop.headers
    )
    assert response.status_code == 200, response.text
    assert await starts(client, shop, closed) == []
    assert await starts(client, shop, short) == [
        local(short, 12),
        local(short, 12, 15),
        local(short, 12, 30),
        local(short, 12, 45),
        local(short, 13),
    ]
    outside = await book(client, shop, local(short, 9))
    assert (outside.status_code, outside.json()["field"]) == (422, "start")


async def test_availability_across_both_us_dst_changes(client: Client, make_tenant: Any) -> None:
    """08:00-17:00 yields 08:00 local on the next spring-forward and fall-back Sundays (New York)."""
    shop = await make_shop(client, make_tenant)
    hours = {day: [["08:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    response = await client.patch(
        f"/api/resources/{shop.resource_id}", json={"weekly_hours": hours}, headers=shop.headers
    )
    assert response.status_code == 200
    for transition in upcoming_us_transitions():
        free = await starts(client, shop, transition)
        assert free[0] == local(transition, 8), transition
        assert free[0].utcoffset() != local(transition - timedelta(days=1), 8).utcoffset()
        assert free[-1] == local(transition, 16)
        assert len(free) == 33


def upcoming_us_transitions() -> list[date]:
    """The next second Sunday of March and first Sunday of November that are at least a week away."""
    found: list[date] = []
    year = datetime.now(UTC).year
    limit = datetime.now(UTC).date() + timedelta(days=7)
    while len(found) < 2:
        for month, nth in ((3, 2), (11, 1)):
            first = date(year, month, 1)
            sunday = first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (nth - 1))
            if sunday >= limit and len(found) < 2 and (not found or found[-1].month != month):
                found.append(sunday)
        year += 1
    assert {d.month for d in found} == {3, 11}
    return found


async def test_availability_windows_and_unknown_ids_are_422(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(0)
    base = {"job_type_id": shop.job_type_id, "start": iso(local(day, 0)), "end": iso(local(day, 23))}
    cases = [
        ({**base, "end": iso(local(day, 0))}, "end"),
        ({**base, "end": iso(local(day + timedelta(days=40), 0))}, "end"),
        ({**base, "job_type_id": "00000000-0000-0000-0000-000000000000"}, "job_type_id"),
        ({**base, "resource_id": "00000000-0000-0000-0000-000000000000"}, "resource_id"),
        ({**base, "start": "2027-01-01T00:00:00"}, "start"),
        ({k: v for k, v in base.items() if k != "job_type_id"}, "job_type_id"),
    ]
    for params, field in cases:
        response = await client.get("/api/availability", params=params, headers=shop.headers)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["field"] == field, (params, response.json())


async def test_availability_without_resource_id_searches_every_active_resource(
    client: Client, make_tenant: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    second = await client.post("/api/resources", json={"name": "Bea"}, headers=shop.headers)
    await client.post("/api/resources", json={"name": "Cy", "active": False}, headers=shop.headers)
    day = next_weekday(3)
    assert (await book(client, shop, local(day, 8))).status_code == 201
    params = {"job_type_id": shop.job_type_id, "start": iso(local(day, 8)), "end": iso(local(day, 9))}
    response = await client.get("/api/availability", params=params, headers=shop.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["timezone"] == NY
    assert body["granularity_minutes"] == 15
    by_name = {r["name"]: [parse(s["start"]) for s in r["slots"]] for r in body["resources"]}
    assert set(by_name) == {"Ana", "Bea"}
    assert by_name["Ana"] == []
    assert by_name["Bea"] == [local(day, 8), local(day, 8, 15), local(day, 8, 30), local(day, 8, 45)]
    assert second.json()["id"] in {r["resource_id"] for r in body["resources"]}


# ------------------------------------------------------------------------------------ holds


async def test_hold_then_overlap_is_409_with_the_conflicting_interval(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(1)
    first = await hold(client, shop, local(day, 9))
    assert first.status_code == 201, first.text
    held = first.json()
    expires = parse(held["expires_at"])
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)
    assert parse(held["end"]) == local(day, 10)

    clash = await hold(client, shop, local(day, 9, 30))
    assert clash.status_code == 409
    assert clash.headers["content-type"].startswith("application/problem+json")
    assert clash.json()["conflict"] == {"kind": "hold", "start": held["start"], "end": held["end"]}
    assert (await hold(client, shop, local(day, 10))).status_code == 201  # back to back is fine

    rows = await db.fetch("SELECT id, resource_id, expires_at FROM sched_holds ORDER BY expires_at")
    assert len(rows) == 2
    assert next(e["hold_id"] for e in await events(db, "booking.held")) == held["id"]


async def test_release_frees_the_slot(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(2)
    held = (await hold(client, shop, local(day, 9))).json()
    assert (await hold(client, shop, local(day, 9))).status_code == 409
    assert (await client.delete(f"/api/holds/{held['id']}", headers=shop.headers)).status_code == 204
    assert (await client.delete(f"/api/holds/{held['id']}", headers=shop.headers)).status_code == 404
    assert (await hold(client, shop, local(day, 9))).status_code == 201


async def test_an_expired_hold_blocks_no_one_even_before_gc(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(3)
    held = (await hold(client, shop, local(day, 9))).json()
    await expire_hold(db, held["id"])
    booked = await book(client, shop, local(day, 9, 30))
    assert booked.status_code == 201, booked.text
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0
    assert await db.fetchval("SELECT count(*) FROM sched_allocations WHERE kind = 'hold'") == 0
    (expired,) = await events(db, "hold.expired")
    assert expired["hold_id"] == held["id"]


# ------------------------------------------------------------------------------------ bookings


async def test_booking_from_a_hold(client: Client, make_tenant: Any, db: asyncpg.Connection) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(4)
    held = (await hold(client, shop, local(day, 14))).json()
    body = {"hold_id": held["id"], "customer_name": "Dee", "customer_phone": "+15551234567", "notes": "gate code 42"}
    response = await client.post("/api/bookings", json=body, headers=shop.headers)
    assert response.status_code == 201, response.text
    booking = response.json()
    assert (booking["hold_id"], booking["status"], booking["start"]) == (held["id"], "confirmed", held["start"])
    assert (booking["customer_phone"], booking["notes"], booking["source"]) == ("+15551234567", "gate code 42", "api")
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0
    kinds = await db.fetch("SELECT kind, expires_at FROM sched_allocations")
    assert [(r["kind"], r["expires_at"]) for r in kinds] == [("booking", None)]
    (confirmed,) = await events(db, "booking.confirmed")
    assert (confirmed["booking_id"], confirmed["hold_id"]) == (booking["id"], held["id"])

    again = await client.post("/api/bookings", json={"hold_id": held["id"]}, headers=shop.headers)
    assert again.status_code == 404
    assert (await hold(client, shop, local(day, 14))).status_code == 409


async def test_booking_an_expired_hold_is_409(client: Client, make_tenant: Any, db: asyncpg.Connection) -> None:
    shop = await make_shop(client, make_tenant)
    held = (await hold(client, shop, local(next_weekday(0), 9))).json()
    await expire_hold(db, held["id"])
    response = await client.post("/api/bookings", json={"hold_id": held["id"]}, headers=shop.headers)
    assert response.status_code == 409
    assert response.json()["title"] == "Hold expired"
    assert await db.fetchval("SELECT count(*) FROM sched_bookings") == 0
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 1  # the refused request changed nothing


async def test_direct_booking_201_then_409_counts_conflicts_and_times_posts(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(1)
    before = metric((await client.get("/metrics")).text, "scheduling_book_conflict_total")
    first = await book(client, shop, local(day, 9), customer_name="Eve")
    assert first.status_code == 201, first.text
    booking = first.json()
    assert (parse(booking["start"]), parse(booking["end"])) == (local(day, 9), local(day, 10))
    second = await book(client, shop, local(day, 9, 45))
    assert second.status_code == 409
    assert second.json()["conflict"] == {"kind": "booking", "start": booking["start"], "end": booking["end"]}
    assert (await book(client, shop, local(day, 10))).status_code == 201

    text = (await client.get("/metrics")).text
    assert metric(text, "scheduling_book_conflict_total") == before + 1
    assert metric(text, "booking_post_p95_ms") > 0
    assert await db.fetchval("SELECT count(*) FROM sched_bookings WHERE status = 'confirmed'") == 2


async def test_booking_refuses_busy_blocks_hours_notice_and_half_given_slots(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant, min_notice_minutes=60 * 24 * 3)
    day = next_weekday(2)
    busy = {"resource_id": shop.resource_id, "start": iso(local(day, 12)), "end": iso(local(day, 13))}
    await client.post("/api/busy-blocks", json=busy, headers=shop.headers)
    blocked = await book(client, shop, local(day, 11, 30))
    assert blocked.status_code == 409
    assert blocked.json()["conflict"]["kind"] == "busy_block"
    assert parse(blocked.json()["conflict"]["start"]) == local(day, 12)

    cases: list[tuple[dict[str, Any], str]] = [
        ({"start": iso(local(day, 16, 30))}, "start"),  # ends after 17:00
        ({"start": iso(local(day + timedelta(days=(5 - day.weekday()) % 7), 9))}, "start"),  # Saturday
        ({"start": iso(datetime.now(UTC) + timedelta(days=1))}, "start"),  # inside the 3-day notice
        ({"start": "2027-03-01T09:00:00"}, "start"),  # no UTC offset
        ({"job_type_id": "00000000-0000-0000-0000-000000000000"}, "job_type_id"),
        ({"resource_id": "00000000-0000-0000-0000-000000000000"}, "resource_id"),
        ({"customer_phone": "555-1234"}, "customer_phone"),
    ]
    for override, field in cases:
        response = await book(client, shop, local(day, 9), **override)
        assert response.status_code == 422, (override, response.text)
        assert response.json()["field"] == field, (override, response.json())
    for body, field in [
        ({"resource_id": shop.resource_id, "job_type_id": shop.job_type_id}, "start"),
        ({"hold_id": shop.resource_id, "start": iso(local(day, 9))}, "hold_id"),
    ]:
        response = await client.post("/api/bookings", json=body, headers=shop.headers)
        assert (response.status_code, response.json()["field"]) == (422, field)


async def test_cancel_frees_the_slot_once(client: Client, make_tenant: Any, db: asyncpg.Connection) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(3)
    booking = (await book(client, shop, local(day, 9))).json()
    path = f"/api/bookings/{booking['id']}/cancel"
    cancelled = await client.post(path, json={"reason": "customer called"}, headers=shop.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["cancel_reason"]) == ("cancelled", "customer called")
    assert cancelled.json()["cancelled_at"] is not None
    assert await db.fetchval("SELECT count(*) FROM sched_allocations") == 0
    assert (await book(client, shop, local(day, 9))).status_code == 201

    again = await client.post(path, headers=shop.headers)  # no body: still fine, and changes nothing
    assert again.status_code == 200
    assert again.json()["cancel_reason"] == "customer called"
    assert len(await events(db, "booking.cancelled")) == 1
    assert (await client.post(f"/api/bookings/{shop.job_type_id}/cancel", headers=shop.headers)).status_code == 404


async def test_reschedule_moves_the_booking_or_leaves_it_alone(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    other = (await client.post("/api/resources", json={"name": "Bea"}, headers=shop.headers)).json()["id"]
    day = next_weekday(4)
    booking = (await book(client, shop, local(day, 9))).json()
    await book(client, shop, local(day, 11))
    path = f"/api/bookings/{booking['id']}/reschedule"

    # Overlapping its own current slot is fine (it moves, it does not collide with itself).
    moved = await client.post(path, json={"start": iso(local(day, 9, 30))}, headers=shop.headers)
    assert moved.status_code == 200, moved.text
    assert parse(moved.json()["start"]) == local(day, 9, 30)

    clash = await client.post(path, json={"start": iso(local(day, 10, 30))}, headers=shop.headers)
    assert clash.status_code == 409
    assert parse(clash.json()["conflict"]["start"]) == local(day, 11)
    assert parse((await client.get(f"/api/bookings/{booking['id']}", headers=shop.headers)).json()["start"]) == local(
        day, 9, 30
    )

    across = await client.post(path, json={"start": iso(local(day, 11)), "resource_id": other}, headers=shop.headers)
    assert across.status_code == 200, across.text
    assert across.json()["resource_id"] == other
    assert (await book(client, shop, local(day, 9, 30))).status_code == 201  # the old slot is free
    (event, *_) = await events(db, "booking.rescheduled")
    assert parse(event["previous_starts_at"]) == local(day, 9)

    await client.post(f"/api/bookings/{booking['id']}/cancel", headers=shop.headers)
    refused = await client.post(path, json={"start": iso(local(day, 14))}, headers=shop.headers)
    assert refused.status_code == 409
    assert refused.json()["title"] == "Booking cancelled"


async def test_list_bookings_filters_by_window_resource_and_status(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(0)
    ids = [(await book(client, shop, local(day, hour))).json()["id"] for hour in (9, 11, 13)]
    await client.post(f"/api/bookings/{ids[2]}/cancel", headers=shop.headers)

    async def listed(**params: Any) -> list[str]:
        response = await client.get("/api/bookings", params=params, headers=shop.headers)
        assert response.status_code == 200, response.text
        return [b["id"] for b in response.json()]

    assert await listed() == ids
    assert await listed(status="confirmed") == ids[:2]
    assert await listed(start=iso(local(day, 10)), end=iso(local(day, 12))) == [ids[1]]
    assert await listed(start=iso(local(day, 10))) == ids[1:]  # 09:00-10:00 ends as the window starts
    assert await listed(resource_id=shop.job_type_id) == []
    assert await listed(limit=1, offset=1) == [ids[1]]
    response = await client.get("/api/bookings", params={"limit": 0}, headers=shop.headers)
    assert (response.status_code, response.json()["field"]) == (422, "limit")


async def test_resources_and_job_types_with_bookings_cannot_be_deleted(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant)
    await book(client, shop, local(next_weekday(1), 9))
    for path in (f"/api/resources/{shop.resource_id}", f"/api/job-types/{shop.job_type_id}"):
        response = await client.delete(path, headers=shop.headers)
        assert response.status_code == 409, response.text
        assert "deactivate" in response.json()["detail"]
        assert (await client.get(path, headers=shop.headers)).status_code == 200


async def test_deleting_a_job_type_releases_its_holds(client: Client, make_tenant: Any, db: asyncpg.Connection) -> None:
    shop = await make_shop(client, make_tenant)
    assert (await hold(client, shop, local(next_weekday(1), 9))).status_code == 201
    assert (await client.delete(f"/api/job-types/{shop.job_type_id}", headers=shop.headers)).status_code == 204
    assert await db.fetchval("SELECT count(*) FROM sched_allocations") == 0
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0


# ------------------------------------------------------------------------------------ ops, docs


async def test_runbook_holds_expiring_query_lists_holds(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant, duration_minutes=30)
    held = (await hold(client, shop, local(next_weekday(2), 9))).json()
    rows = await run_named_query("holds_expiring")
    assert rows == []  # 15 minutes left: not yet "about to expire"
    await db.execute("UPDATE sched_holds SET expires_at = now() + interval '2 minutes' WHERE id = $1::uuid", held["id"])
    (row,) = await run_named_query("holds_expiring")
    assert (str(row["id"]), str(row["resource_id"])) == (held["id"], shop.resource_id)


async def test_openapi_documents_the_scheduling_api(client: Client) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/api/resources",
        "/api/resources/{resource_id}",
        "/api/job-types",
        "/api/busy-blocks",
        "/api/availability",
        "/api/holds",
        "/api/holds/{hold_id}",
        "/api/bookings",
        "/api/bookings/{booking_id}/cancel",
        "/api/bookings/{booking_id}/reschedule",
    ):
        assert path in paths, path
    booking_post = paths["/api/bookings"]["post"]
    assert {"201", "409", "422"} <= set(booking_post["responses"])
    assert "409" in paths["/api/holds"]["post"]["responses"]
    assert booking_post["security"] == [{"ClerkSession": []}]

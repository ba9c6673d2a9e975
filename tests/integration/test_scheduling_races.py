"""No double booking is the database's guarantee: racing writers, the exclusion constraint itself, hold GC."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nmc.db import get_alchemy_config
from nmc.scheduling import BookingCreate, HoldCreate, SlotTaken, collect_expired_holds, create_booking, create_hold
from nmc.settings import get_settings
from nmc.worker import HOLD_GC_SCHEDULE, build_consumer
from tests.integration.test_scheduling_api import Shop, events, expire_hold, local, make_shop, next_weekday

Client = AsyncTestClient[Litestar]


def direct(shop: Shop, start: Any) -> BookingCreate:
    return BookingCreate(resource_id=UUID(shop.resource_id), job_type_id=UUID(shop.job_type_id), start=start)


async def test_a_second_writer_waits_for_the_first_and_gets_its_interval(client: Client, make_tenant: Any) -> None:
    shop = await make_shop(client, make_tenant)
    tenant_id = UUID(shop.tenant_id)
    day = next_weekday(1)
    config = get_alchemy_config()
    async with config.get_session() as first, config.get_session() as second:
        won = await create_booking(first, tenant_id, direct(shop, local(day, 9)))
        # The first booking is not committed: the second insert waits on it inside Postgres.
        racing = asyncio.create_task(create_booking(second, tenant_id, direct(shop, local(day, 9, 30))))
        await asyncio.sleep(0.5)
        assert not racing.done(), "the second writer did not wait for the first one's transaction"
        await first.commit()
        with pytest.raises(SlotTaken) as lost:
            await racing
    assert lost.value.conflict is not None
    assert (lost.value.conflict.kind, lost.value.conflict.start, lost.value.conflict.end) == (
        "booking",
        won.start,
        won.end,
    )


async def test_many_racers_for_one_slot_make_one_booking(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    tenant_id = UUID(shop.tenant_id)
    day = next_weekday(2)
    config = get_alchemy_config()

    async def racer(minutes: int) -> str:
        async with config.get_session() as session:
            try:
                if minutes % 2:
                    hold = HoldCreate(
                        resource_id=UUID(shop.resource_id),
                        job_type_id=UUID(shop.job_type_id),
                        start=local(day, 9, minutes),
                    )
                    await create_hold(session, tenant_id, hold)
                else:
                    await create_booking(session, tenant_id, direct(shop, local(day, 9, minutes)))
            except SlotTaken:
                await session.rollback()
                return "409"
            await session.commit()
            return "201"

    # Ten writers, holds and bookings mixed, all overlapping 09:00-10:00 on one technician.
    outcomes = await asyncio.gather(*(racer(minutes) for minutes in range(0, 50, 5)))
    assert sorted(outcomes) == ["201"] + ["409"] * 9
    assert await db.fetchval("SELECT count(*) FROM sched_allocations") == 1
    overlapping = await db.fetchval(
        "SELECT count(*) FROM sched_allocations a JOIN sched_allocations b "
        "ON a.resource_id = b.resource_id AND a.id < b.id AND a.during && b.during"
    )
    assert overlapping == 0


async def test_the_constraint_not_the_code_refuses_overlap(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    """Straight SQL, past every check in Python: half-open ranges, per resource, whatever the kind."""
    shop = await make_shop(client, make_tenant)
    other = (await client.post("/api/resources", json={"name": "Bea"}, headers=shop.headers)).json()["id"]
    insert = (
        "INSERT INTO sched_allocations (id, tenant_id, resource_id, during, kind, expires_at) "
        "VALUES (gen_random_uuid(), $1::uuid, $2::uuid, tstzrange($3, $4), $5, $6)"
    )
    day = next_weekday(3)
    at = lambda h, m=0: local(day, h, m)  # noqa: E731
    await db.execute(insert, shop.tenant_id, shop.resource_id, at(9), at(10), "booking", None)
    await db.execute(insert, shop.tenant_id, shop.resource_id, at(10), at(11), "booking", None)  # back to back
    await db.execute(insert, shop.tenant_id, other, at(9), at(11), "booking", None)  # another resource
    with pytest.raises(asyncpg.ExclusionViolationError):
        await db.execute(insert, shop.tenant_id, shop.resource_id, at(10, 59), at(11, 30), "booking", None)
    with pytest.raises(asyncpg.ExclusionViolationError):
        await db.execute(insert, shop.tenant_id, shop.resource_id, at(8), at(12), "hold", at(8) + timedelta(minutes=15))


async def test_a_booked_slot_cannot_be_released_behind_the_bookings_back(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    booking = (
        await client.post(
            "/api/bookings",
            json={
                "resource_id": shop.resource_id,
                "job_type_id": shop.job_type_id,
                "start": local(next_weekday(4), 9).isoformat(),
            },
            headers=shop.headers,
        )
    ).json()
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute("DELETE FROM sched_allocations")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE sched_bookings SET allocation_id = NULL WHERE id = $1::uuid", booking["id"])


async def test_hold_gc_deletes_expired_holds_only_and_says_so(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    day = next_weekday(0)
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id}
    holds = []
    for hour in (9, 11, 13, 15):
        response = await client.post(
            "/api/holds", json={**body, "start": local(day, hour).isoformat()}, headers=shop.headers
        )
        holds.append(response.json()["id"])
    await client.post("/api/bookings", json={"hold_id": holds[3]}, headers=shop.headers)
    for expired in holds[:2]:
        await expire_hold(db, expired)

    assert await collect_expired_holds(batch_size=1) == 2  # in batches, until none is left
    assert [str(r["id"]) for r in await db.fetch("SELECT id FROM sched_holds")] == [holds[2]]
    kinds = sorted(r["kind"] for r in await db.fetch("SELECT kind FROM sched_allocations"))
    assert kinds == ["booking", "hold"]
    assert sorted(e["hold_id"] for e in await events(db, "hold.expired")) == sorted(holds[:2])
    assert await collect_expired_holds() == 0


async def test_the_worker_runs_hold_gc_every_minute(db: asyncpg.Connection) -> None:
    settings = get_settings()
    with_schedules = build_consumer(db, settings, with_schedules=True)
    registered = {(str(key.entrypoint), str(key.expression)) for key in with_schedules.sm.registry}
    assert ("hold_gc", HOLD_GC_SCHEDULE) in registered
    assert HOLD_GC_SCHEDULE == "* * * * *"
    without = build_consumer(db, settings, with_schedules=False)
    assert not any(str(key.entrypoint) == "hold_gc" for key in without.sm.registry)


async def test_booking_holds_while_others_race_for_their_slots(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    """Holds turning into bookings and direct bookings of the same slots, all at once: the holders win."""
    shop = await make_shop(client, make_tenant)
    tenant_id = UUID(shop.tenant_id)
    day = next_weekday(4)
    config = get_alchemy_config()
    starts = [local(day, hour) for hour in (8, 10, 12, 14)]
    holds = []
    for start in starts:
        response = await client.post(
            "/api/holds",
            json={"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": start.isoformat()},
            headers=shop.headers,
        )
        holds.append(UUID(response.json()["id"]))

    async def attempt(body: BookingCreate) -> str:
        async with config.get_session() as session:
            try:
                await create_booking(session, tenant_id, body)
            except SlotTaken:
                await session.rollback()
                return "409"
            await session.commit()
            return "201"

    racers = [BookingCreate(hold_id=hold) for hold in holds]
    racers += [direct(shop, start + timedelta(minutes=30)) for start in starts]
    outcomes = await asyncio.wait_for(asyncio.gather(*(attempt(body) for body in racers)), timeout=5)
    assert outcomes == ["201"] * 4 + ["409"] * 4
    assert await db.fetchval("SELECT count(*) FROM sched_bookings WHERE hold_id IS NOT NULL") == 4
    assert await db.fetchval("SELECT count(*) FROM sched_allocations WHERE kind = 'hold'") == 0

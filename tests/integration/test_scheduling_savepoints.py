"""A refused hold or booking never ends the caller's transaction.

Scheduling's writes run after a savepoint and a refusal rolls back to it only, so whatever the caller
wrote or locked first (the SMS booking dialog locks its dialog row, then holds or books) is still
there, still locked, and the caller can carry on in the same transaction and commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import get_alchemy_config, raw_connection
from nmc.problems import InvalidField, NotFound
from nmc.scheduling import (
    SCHEDULING_REFUSALS,
    BookingCreate,
    HoldCreate,
    HoldExpiredError,
    SlotTaken,
    create_booking,
    create_hold,
    queries,
)
from nmc.scheduling.booking import cancel_booking
from nmc.scheduling.schemas import BusyBlockCreate
from nmc.scheduling.service import BusyBlockService
from tests.integration.test_scheduling_api import Shop, events, expire_hold, local, make_shop, next_weekday

Client = AsyncTestClient[Litestar]


def direct(shop: Shop, start: Any) -> BookingCreate:
    return BookingCreate(resource_id=UUID(shop.resource_id), job_type_id=UUID(shop.job_type_id), start=start)


def held(shop: Shop, start: Any) -> HoldCreate:
    return HoldCreate(resource_id=UUID(shop.resource_id), job_type_id=UUID(shop.job_type_id), start=start)


async def other_resource(client: Client, shop: Shop) -> UUID:
    response = await client.post("/api/resources", json={"name": "Bea"}, headers=shop.headers)
    assert response.status_code == 201, response.text
    return UUID(response.json()["id"])


async def write_and_lock_first(session: AsyncSession, tenant_id: UUID, other: UUID, day: date) -> UUID:
    """What a caller does before it holds or books: an ORM write (a busy block on another resource)
    and a row it updates, so locks, in plain SQL (as the SMS dialog locks its dialog row)."""
    block = await BusyBlockService(session=session).create_for(
        tenant_id, BusyBlockCreate(resource_id=other, start=local(day, 12), end=local(day, 13), title="written first")
    )
    await (await raw_connection(session)).execute(
        "UPDATE sched_resources SET name = 'Renamed first' WHERE id = $1", other
    )
    return block.id


async def assert_still_locked(db: asyncpg.Connection, other: UUID) -> None:
    with pytest.raises(asyncpg.LockNotAvailableError):
        await db.execute("SELECT id FROM sched_resources WHERE id = $1 FOR UPDATE NOWAIT", other)


async def assert_kept(db: asyncpg.Connection, other: UUID, block_id: UUID) -> None:
    assert await db.fetchval("SELECT name FROM sched_resources WHERE id = $1", other) == "Renamed first"
    assert await db.fetchval("SELECT title FROM sched_busy_blocks WHERE id = $1", block_id) == "written first"


async def waiting_on_a_lock(db: asyncpg.Connection) -> None:
    """Until a backend of this database waits on a lock (the second writer, inside its write)."""
    for _ in range(100):
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the second writer never waited for the first one")


def count_rollbacks(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """Spy on rollbacks to the savepoint: proof the refusal came from the write, not the early check."""
    calls: list[None] = []
    real = queries.rollback_to_savepoint

    async def spy(connection: asyncpg.Connection) -> None:
        calls.append(None)
        await real(connection)

    monkeypatch.setattr(queries, "rollback_to_savepoint", spy)
    return calls


@pytest.mark.parametrize("kind", ["hold", "booking"])
async def test_a_slot_taken_meanwhile_keeps_what_the_caller_wrote_and_locked(
    kind: str, client: Client, make_tenant: Any, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = await make_shop(client, make_tenant)
    other = await other_resource(client, shop)
    tenant_id = UUID(shop.tenant_id)
    day = next_weekday(1)
    rollbacks = count_rollbacks(monkeypatch)
    config = get_alchemy_config()
    async with config.get_session() as winner, config.get_session() as caller:
        block_id = await write_and_lock_first(caller, tenant_id, other, day)
        won = await create_booking(winner, tenant_id, direct(shop, local(day, 9)))
        attempt: Coroutine[Any, Any, Any] = (
            create_hold(caller, tenant_id, held(shop, local(day, 9, 30)))
            if kind == "hold"
            else create_booking(caller, tenant_id, direct(shop, local(day, 9, 30)))
        )
        racing = asyncio.create_task(attempt)
        await waiting_on_a_lock(db)  # past the early check, its write waits for the winner's transaction
        await winner.commit()
        with pytest.raises(SlotTaken) as lost:
            await racing
        assert lost.value.conflict is not None
        assert (lost.value.conflict.kind, lost.value.conflict.start, lost.value.conflict.end) == (
            "booking",
            won.start,
            won.end,
        )
        assert len(rollbacks) == 1
        await assert_still_locked(db, other)
        # The caller's transaction is usable: it offers another time, as the SMS dialog does.
        again = await create_hold(caller, tenant_id, held(shop, local(day, 11)))
        await caller.commit()
    await assert_kept(db, other, block_id)
    assert [e["booking_id"] for e in await events(db, "booking.confirmed")] == [str(won.id)]
    assert [e["hold_id"] for e in await events(db, "booking.held")] == [str(again.id)]  # the refused one went
    assert await db.fetchval("SELECT count(*) FROM sched_allocations") == 2


async def test_a_conflict_gone_when_it_is_read_is_retried_in_the_callers_transaction(
    client: Client, make_tenant: Any, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = await make_shop(client, make_tenant)
    other = await other_resource(client, shop)
    tenant_id = UUID(shop.tenant_id)
    day = next_weekday(2)
    config = get_alchemy_config()
    real_conflict = queries.conflict
    cancelled: list[UUID] = []

    def cancelling_first(booking_id: UUID) -> Callable[..., Awaitable[Any]]:
        async def conflict(*args: Any) -> Any:
            if not cancelled:  # the winner cancels between the violation and the conflict read
                async with config.get_session() as owner:
                    await cancel_booking(owner, tenant_id, booking_id)
                    await owner.commit()
                cancelled.append(booking_id)
            return await real_conflict(*args)

        return conflict

    async with config.get_session() as winner, config.get_session() as caller:
        block_id = await write_and_lock_first(caller, tenant_id, other, day)
        won = await create_booking(winner, tenant_id, direct(shop, local(day, 9)))
        monkeypatch.setattr(queries, "conflict", cancelling_first(won.id))
        racing = asyncio.create_task(create_booking(caller, tenant_id, direct(shop, local(day, 9, 30))))
        await waiting_on_a_lock(db)
        await winner.commit()
        booking = await racing
        assert cancelled == [won.id]
        await assert_still_locked(db, other)
        await caller.commit()
    await assert_kept(db, other, block_id)
    statuses = dict(await db.fetch("SELECT id, status FROM sched_bookings"))
    assert statuses == {won.id: "cancelled", booking.id: "confirmed"}
    # Published once: the first attempt's event was rolled back with its write.
    assert sorted(e["booking_id"] for e in await events(db, "booking.confirmed")) == sorted(
        [str(won.id), str(booking.id)]
    )


async def test_a_hold_that_ran_out_keeps_the_callers_writes_and_the_hold(
    client: Client, make_tenant: Any, db: asyncpg.Connection
) -> None:
    shop = await make_shop(client, make_tenant)
    other = await other_resource(client, shop)
    tenant_id = UUID(shop.tenant_id)
    day = next_weekday(3)
    response = await client.post(
        "/api/holds",
        json={"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": local(day, 9).isoformat()},
        headers=shop.headers,
    )
    hold_id = UUID(response.json()["id"])
    await expire_hold(db, str(hold_id))
    async with get_alchemy_config().get_session() as caller:
        block_id = await write_and_lock_first(caller, tenant_id, other, day)
        with pytest.raises(SCHEDULING_REFUSALS) as refused:
            await create_booking(caller, tenant_id, BookingCreate(hold_id=hold_id))
        assert isinstance(refused.value, HoldExpiredError)
        await assert_still_locked(db, other)
        # The booking statement deleted the expired hold's row; only that went back to the savepoint.
        connection = await raw_connection(caller)
        assert await connection.fetchval("SELECT count(*) FROM sched_holds WHERE id = $1", hold_id) == 1
        with pytest.raises(NotFound):
            await create_booking(caller, tenant_id, BookingCreate(hold_id=UUID(int=0)))
        await caller.commit()
    await assert_kept(db, other, block_id)
    assert await db.fetchval("SELECT count(*) FROM sched_holds WHERE id = $1", hold_id) == 1  # for the hold GC
    assert await events(db, "booking.confirmed") == []


def test_the_refusals_a_caller_offers_fresh_times_for() -> None:
    assert set(SCHEDULING_REFUSALS) == {SlotTaken, HoldExpiredError, NotFound, InvalidField}

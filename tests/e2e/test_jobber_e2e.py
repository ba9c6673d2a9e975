"""Jobber sync (issue #14) with the real web, worker and jobs processes, the fake Jobber (its webhooks
POSTed to the real web, signed) and the fake Twilio: connect; a visit created in Jobber blocks that time
for callers (not offered by SMS); an SMS booking appears in Jobber exactly once and its cancellation
archives it; recurring visits that never notified arrive by the poll; the app disconnected in Jobber
becomes needs_reauth and one owner alert; a throttled account keeps being synced; two processes that
refresh one account's token at once keep a working one."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import stack_env, wait_for
from tests.e2e.test_booking_by_sms_e2e import asked_to_book, bookable_shop, offered_times, reply_to
from tests.e2e.test_conversation_e2e import Shop, texts_to, wait_for_texts
from tests.fakes.clerk import FakeClerk
from tests.fakes.jobber import FakeJobber
from tests.processes import Process, Stack, free_port, reap

pytestmark = pytest.mark.e2e
CALLER = "+15557658888"
POLL_SECONDS = 3
PORT = free_port()


@pytest.fixture(scope="module")
def jobber() -> Iterator[FakeJobber]:
    with FakeJobber(webhook_url=f"http://127.0.0.1:{PORT}/webhooks/jobber") as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(
    migrated_database: str, fake_twilio_server: Any, jobber: FakeJobber, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    env = stack_env(
        fake_twilio_server.base_url, PORT=str(PORT), **jobber.settings, POLL_INTERVAL_JOBBER_SECONDS=str(POLL_SECONDS)
    )
    log_dir = tmp_path_factory.mktemp("e2e-jobber-logs")
    running = Stack(env, log_dir)
    jobs = Process("jobs", env, log_dir)
    try:
        yield running
    finally:
        jobs.stop()
        reap(jobs, grace=15.0)  # Dramatiq may finish a sync waiting for its cost bucket
        running.stop()


async def connect(shop: Shop, db: asyncpg.Connection, jobber: FakeJobber) -> tuple[UUID, str, str, str]:
    """The owner connects the shop's Jobber account and maps its one technician to the shop's resource:
    (connection id, account, Jobber user, resource id)."""
    [resource] = shop.api("GET", "/resources").json()
    account = jobber.add_account("Shop in Jobber", timezone="Etc/GMT")
    user = jobber.add_user(account, "Ana Tech")
    jobber.consent_as(account)
    response = shop.api("POST", "/calendars/jobber/connect", json={"resource_id": resource["id"]})
    assert response.status_code == 200, response.text
    consent = httpx.get(response.json()["authorization_url"], follow_redirects=False)
    callback = httpx.get(consent.headers["location"], follow_redirects=False)
    assert callback.status_code == 200 and "connected" in callback.text, callback.text
    [listed] = [c for c in shop.api("GET", "/calendars").json() if c["provider"] == "jobber"]
    mapping = {"mappings": [{"jobber_user_id": user, "resource_id": resource["id"]}]}
    mapped = shop.api("PATCH", f"/calendars/{listed['id']}/jobber-users", json=mapping)
    assert mapped.status_code == 200, mapped.text

    async def synced() -> Any:
        return await db.fetchval("SELECT last_synced_at FROM calendar_connections WHERE id = $1", UUID(listed["id"]))

    await wait_for(synced, timeout=30)
    return UUID(listed["id"]), account, user, resource["id"]


async def busy_block(db: asyncpg.Connection, visit_id: str, timeout: float) -> Any:
    async def found() -> Any:
        return await db.fetchrow(
            "SELECT * FROM sched_busy_blocks WHERE source = 'jobber' AND external_id = $1", visit_id
        )

    return await wait_for(found, timeout=timeout)


async def test_a_visit_blocks_callers_and_an_sms_booking_lands_in_jobber_once(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, jobber: FakeJobber, clerk: FakeClerk
) -> None:
    shop = await bookable_shop(stack, clerk)
    _, account, user, _ = await connect(shop, db, jobber)

    # Ana is on a job for the next six hours: Jobber's webhook, then the visit re-queried by the jobs process.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    busy_until = now + timedelta(hours=6)
    visit = jobber.add_visit(account, start=now - timedelta(minutes=30), end=busy_until, user_ids=[user])
    await busy_block(db, visit, timeout=15)
    [delivery] = jobber.wait_for_deliveries(1, topic="VISIT_CREATE")
    assert delivery.status == 200 and delivery.latency is not None and delivery.latency < 1.0

    offer = await asked_to_book(shop, fake_twilio, CALLER)
    assert len(offered_times(offer)) == 3, offer
    held = await reply_to(shop, fake_twilio, CALLER, "1")
    assert "is held for you" in held, held
    booked = await reply_to(shop, fake_twilio, CALLER, "YES")
    assert booked.startswith("You're booked"), booked
    [booking] = [b for b in shop.api("GET", "/bookings").json() if b["customer_phone"] == CALLER]
    assert datetime.fromisoformat(booking["start"]) >= busy_until  # the visit's time was not offered

    marker = f"[nmc:{UUID(booking['id']).hex}]"

    async def written() -> list[dict[str, Any]]:
        return [r for r in jobber.requests(account) if marker in r["title"]]

    [request] = await wait_for(written, timeout=30)
    assert request["assessment"]["assignedUserIds"] == [user]
    assert request["assessment"]["startAt"] == datetime.fromisoformat(booking["start"])
    await asyncio.sleep(POLL_SECONDS)  # redeliveries and polls that follow create nothing more
    assert len(jobber.requests(account)) == 1 and jobber.call_count("RequestCreate", account=account) == 1

    assert shop.api("POST", f"/bookings/{booking['id']}/cancel", json={}).status_code == 200

    async def archived() -> bool:
        return bool((await written())[0]["archived"])

    await wait_for(archived, timeout=30)


async def test_the_poll_brings_recurring_visits_and_a_disconnect_needs_reauth(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, jobber: FakeJobber, clerk: FakeClerk
) -> None:
    shop = await bookable_shop(stack, clerk)
    connection_id, account, user, _ = await connect(shop, db, jobber)
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=1)
    series = jobber.add_recurring_visits(account, 4, first_start=start, user_ids=[user])  # one webhook only
    await busy_block(db, series[-1], timeout=POLL_SECONDS * 5)
    assert len(jobber.deliveries("VISIT_CREATE")) >= 1

    jobber.disconnect_app(account)

    async def needs_reauth() -> bool:
        status = await db.fetchval("SELECT status FROM calendar_connections WHERE id = $1", connection_id)
        return bool(status == "needs_reauth")

    await wait_for(needs_reauth, timeout=15)
    [alert] = await wait_for_texts(fake_twilio, shop.forward_to, 1, timeout=30)
    assert "Reconnect it" in alert["form"]["Body"]
    visits_before = jobber.call_count("Visits", account=account)
    await asyncio.sleep(POLL_SECONDS * 2)  # not polled any more, not re-alerted
    assert jobber.call_count("Visits", account=account) == visits_before
    assert len(texts_to(fake_twilio, shop.forward_to)) == 1


async def test_a_throttled_account_keeps_being_synced_without_errors(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, jobber: FakeJobber, clerk: FakeClerk
) -> None:
    errors_before = await db.fetchval(
        "SELECT coalesce(sum(count), 0) FROM calendar_counters WHERE name = 'sync_errors' AND provider = 'jobber'"
    )
    slow_shop, quick_shop = await bookable_shop(stack, clerk), await bookable_shop(stack, clerk)
    slow_id, slow, slow_user, slow_resource = await connect(slow_shop, db, jobber)
    _, quick, quick_user, quick_resource = await connect(quick_shop, db, jobber)
    # A small, slow bucket: every page of the slow account's window waits for it (within the cap).
    jobber.set_bucket(slow, maximum=1000, restore_rate=100)
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=2)
    jobber.seed_visits(slow, 160, [slow_user], start, 30)
    synced_before = await db.fetchval("SELECT last_synced_at FROM calendar_connections WHERE id = $1", slow_id)

    async def quick_visit_blocks() -> Any:
        return await db.fetchval(
            "SELECT count(*) FROM sched_busy_blocks WHERE resource_id = $1 AND source = 'jobber'", UUID(quick_resource)
        )

    visit_start = datetime.now(UTC) + timedelta(hours=3)
    jobber.add_visit(quick, start=visit_start, end=visit_start + timedelta(hours=1), user_ids=[quick_user])
    await wait_for(quick_visit_blocks, timeout=15)  # the other account is not held up

    async def all_slow_visits() -> bool:
        count = await db.fetchval(
            "SELECT count(*) FROM sched_busy_blocks WHERE resource_id = $1 AND source = 'jobber'", UUID(slow_resource)
        )
        return bool(count == 160)

    await wait_for(all_slow_visits, timeout=90)
    assert jobber.bucket(slow)["maximumAvailable"] == 1000  # it was synced through the small bucket
    row = await db.fetchrow(
        "SELECT status, last_synced_at, consecutive_failures FROM calendar_connections WHERE id = $1", slow_id
    )
    assert row["status"] == "active" and row["consecutive_failures"] == 0 and row["last_synced_at"] > synced_before
    errors_after = await db.fetchval(
        "SELECT coalesce(sum(count), 0) FROM calendar_counters WHERE name = 'sync_errors' AND provider = 'jobber'"
    )
    assert errors_after == errors_before


async def test_two_processes_refreshing_one_account_at_once_keep_a_working_token(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, jobber: FakeJobber, clerk: FakeClerk
) -> None:
    """Jobber's refresh tokens rotate and the old one is refused at once: two real processes that find
    the access token expired at the same moment must not both spend the one refresh token."""
    shop = await bookable_shop(stack, clerk)
    connection_id, account, user, resource_id = await connect(shop, db, jobber)
    jobber.expire_tokens(account)
    await db.execute(
        "UPDATE calendar_connections SET access_token_expires_at = now() - interval '1 minute' WHERE id = $1",
        connection_id,
    )
    refreshes_before = jobber.refresh_count(account)
    env = {**stack.env, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "nmc", "calendars", "sync", "--connection", str(connection_id)]
    pipe, merged = asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT
    syncs = [
        await asyncio.create_subprocess_exec(*command, env=env, cwd=PROJECT_ROOT, stdout=pipe, stderr=merged)
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(sync.communicate() for sync in syncs))
    assert [sync.returncode for sync in syncs] == [0, 0], [out.decode()[-2000:] for out, _ in outputs]
    assert jobber.refresh_count(account) == refreshes_before + 1  # one refresher; the other used its token
    assert jobber.refused_refresh_count(account) == 0
    row = await db.fetchrow(
        "SELECT status, consecutive_failures FROM calendar_connections WHERE id = $1", connection_id
    )
    assert (row["status"], row["consecutive_failures"]) == ("active", 0)

    # The stored token works for the jobs process too: a visit created now reaches the resource.
    visit_start = datetime.now(UTC) + timedelta(hours=5)
    visit = jobber.add_visit(account, start=visit_start, end=visit_start + timedelta(hours=1), user_ids=[user])
    block = await busy_block(db, visit, timeout=20)
    assert str(block["resource_id"]) == resource_id

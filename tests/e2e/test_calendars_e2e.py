"""Google Calendar sync with the real web, worker and jobs processes, the fake Google and the fake Twilio:
connect; an event created at Google becomes busy time (pushed) and is not offered by SMS; a booking by
SMS appears at Google exactly once and its cancellation removes it; with notifications silent the poll
picks a change up within one interval; the push channel is renewed before it expires; a revoked grant
becomes needs_reauth and one owner alert."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import stack_env, wait_for
from tests.e2e.test_booking_by_sms_e2e import asked_to_book, bookable_shop, offered_times, reply_to
from tests.e2e.test_conversation_e2e import Shop, texts_to, wait_for_texts
from tests.fakes.clerk import FakeClerk
from tests.fakes.google import FakeGoogle
from tests.processes import Process, Stack

pytestmark = pytest.mark.e2e
CALLER = "+15557659999"
POLL_SECONDS = 3
CHANNEL_SECONDS = 20  # channels are renewed when half their life is left


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(
    migrated_database: str, fake_twilio_server: Any, google: FakeGoogle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    env = stack_env(
        fake_twilio_server.base_url,
        **google.settings,
        POLL_INTERVAL_GOOGLE_SECONDS=str(POLL_SECONDS),
        GOOGLE_WATCH_TTL_SECONDS=str(CHANNEL_SECONDS),
    )
    log_dir = tmp_path_factory.mktemp("e2e-calendar-logs")
    running = Stack(env, log_dir)
    jobs = Process("jobs", env, log_dir)
    running.jobs = jobs  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        jobs.stop()
        running.stop()


async def connect(shop: Shop, db: asyncpg.Connection) -> dict[str, Any]:
    """The owner connects the shop's only resource: the consent page, Google's redirect, our callback."""
    [resource] = shop.api("GET", "/resources").json()
    response = shop.api("POST", "/calendars/google/connect", json={"resource_id": resource["id"]})
    assert response.status_code == 200, response.text
    consent = httpx.get(response.json()["authorization_url"], follow_redirects=False)
    callback = httpx.get(consent.headers["location"], follow_redirects=False)
    assert callback.status_code == 200 and "connected" in callback.text, callback.text
    assert urlsplit(consent.headers["location"]).path == "/oauth/google/callback"

    async def synced_and_watching() -> Any:
        return await db.fetchrow(
            "SELECT c.* FROM calendar_connections c JOIN calendar_channels ch ON ch.connection_id = c.id "
            "WHERE c.resource_id = $1 AND c.last_synced_at IS NOT NULL",
            __import__("uuid").UUID(resource["id"]),
        )

    return dict(await wait_for(synced_and_watching, timeout=30))


async def busy_block(db: asyncpg.Connection, event_id: str, timeout: float) -> Any:
    async def found() -> Any:
        return await db.fetchrow(
            "SELECT * FROM sched_busy_blocks WHERE source = 'google' AND external_id = $1", event_id
        )

    return await wait_for(found, timeout=timeout)


async def test_busy_time_in_bookings_out(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, google: FakeGoogle, clerk: FakeClerk
) -> None:
    shop = await bookable_shop(stack, clerk)
    connection = await connect(shop, db)
    assert connection["status"] == "active"

    # The owner is busy for the next six hours: pushed to us, synced by the jobs process.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    busy_until = now + timedelta(hours=6)
    event = google.add_event(start=now - timedelta(minutes=30), end=busy_until, summary="Out on a job")
    await busy_block(db, event, timeout=15)  # pushed: seconds on a quiet machine, more on a loaded one
    assert any(n["X-Goog-Resource-State"] == "exists" and n["status"] == "200" for n in google.notifications())

    offer = await asked_to_book(shop, fake_twilio, CALLER)
    times = offered_times(offer)
    assert len(times) == 3, offer
    bookings_before = shop.api("GET", "/bookings").json()
    held = await reply_to(shop, fake_twilio, CALLER, "1")
    assert "is held for you" in held, held
    booked = await reply_to(shop, fake_twilio, CALLER, "YES")
    assert booked.startswith("You're booked"), booked
    [booking] = [b for b in shop.api("GET", "/bookings").json() if b not in bookings_before]
    assert datetime.fromisoformat(booking["start"]) >= busy_until  # the calendar's busy time was not offered

    async def written() -> list[dict[str, Any]]:
        return [e for e in google.events() if e["id"] == "nmc" + booking["id"].replace("-", "")]

    [at_google] = await wait_for(written, timeout=30)
    assert at_google["extendedProperties"]["private"]["nmc_booking_id"] == booking["id"]
    await asyncio.sleep(POLL_SECONDS)  # the redeliveries and polls that follow write nothing more
    assert len([e for e in google.events() if e.get("extendedProperties")]) == 1
    own_blocks = await db.fetchval("SELECT count(*) FROM sched_busy_blocks WHERE external_id = $1", at_google["id"])
    assert own_blocks == 0  # our own event never comes back as busy time

    assert shop.api("POST", f"/bookings/{booking['id']}/cancel", json={}).status_code == 200

    async def removed() -> bool:
        return not await written()

    await wait_for(removed, timeout=30)


async def test_the_poll_covers_silent_notifications_and_channels_are_renewed(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, google: FakeGoogle, clerk: FakeClerk
) -> None:
    shop = await bookable_shop(stack, clerk)
    connection = await connect(shop, db)
    google.state.push_enabled = False
    try:
        start = datetime.now(UTC) + timedelta(days=1)
        event = google.add_event(start=start, end=start + timedelta(hours=1))
        started = asyncio.get_running_loop().time()
        # One interval until the connection is due, the tick's own period, then the job: a few intervals at most.
        await busy_block(db, event, timeout=POLL_SECONDS * 4)
        assert asyncio.get_running_loop().time() - started <= POLL_SECONDS * 4
    finally:
        google.state.push_enabled = True

    first = await db.fetchval(
        "SELECT id FROM calendar_channels WHERE connection_id = $1 ORDER BY created_at LIMIT 1", connection["id"]
    )

    async def renewed() -> Any:
        return await db.fetchrow(
            "SELECT (SELECT stopped_at FROM calendar_channels WHERE id = $2) AS old_stopped, "
            "(SELECT count(*) FROM calendar_channels WHERE connection_id = $1 AND stopped_at IS NULL) AS open",
            connection["id"],
            first,
        )

    async def renewed_and_stopped() -> Any:
        row = await renewed()
        return row if row["old_stopped"] is not None and row["open"] >= 1 else None

    await wait_for(renewed_and_stopped, timeout=CHANNEL_SECONDS + 10)
    assert first not in {c.id for c in google.channels()}  # stopped at Google too


async def test_a_revoked_grant_needs_reauth_and_tells_the_owner_once(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, google: FakeGoogle, clerk: FakeClerk
) -> None:
    shop = await bookable_shop(stack, clerk)
    connection = await connect(shop, db)
    google.revoke_all()
    google.expire_access_tokens()

    async def needs_reauth() -> bool:
        status = await db.fetchval("SELECT status FROM calendar_connections WHERE id = $1", connection["id"])
        return bool(status == "needs_reauth")

    await wait_for(needs_reauth, timeout=POLL_SECONDS * 5)
    [alert] = await wait_for_texts(fake_twilio, shop.forward_to, 1, timeout=30)
    assert "Reconnect it" in alert["form"]["Body"] and alert["form"]["From"] == shop.number
    await asyncio.sleep(POLL_SECONDS * 2)  # polls go on for the others; this one is not polled nor re-alerted
    assert len(texts_to(fake_twilio, shop.forward_to)) == 1
    [listed] = shop.api("GET", "/calendars").json()
    assert listed["status"] == "needs_reauth" and "invalid_grant" in (listed["last_error"] or "")

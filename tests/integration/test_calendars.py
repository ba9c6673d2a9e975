"""Google Calendar two-way sync (issue #11) on the real app and database, against the fake Google.

Jobs-process work (sync, channels, write-back) is called in-process here, as the Dramatiq actors call it;
tests/e2e/test_calendars_e2e.py runs it in the real jobs process.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nmc.calendars import keys
from nmc.calendars.google import event_id_for
from nmc.calendars.sync import poll_tick, run_sync, run_watch
from nmc.calendars.writeback import write_back
from nmc.events import dispatch
from tests.conftest import run_cli
from tests.fakes.google import FakeGoogle
from tests.integration.test_observability import sample_value
from tests.integration.test_scheduling_api import Shop, iso, local, make_shop, next_weekday

Client = AsyncTestClient[Litestar]
UI = "https://app.example.com/settings/calendars"


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture
def google(google_server: FakeGoogle, settings_env: Any) -> FakeGoogle:
    google_server.reset()
    settings_env(**google_server.settings, GOOGLE_REDIRECT_UI_URL=UI, GOOGLE_WATCH_TTL_SECONDS="3600")
    return google_server


async def connect(client: Client, shop: Shop, calendar_id: str = "primary") -> dict[str, str]:
    """The owner's whole OAuth round trip: connect → consent (the fake agrees) → callback → redirect."""
    response = await client.post(
        "/api/calendars/google/connect",
        json={"resource_id": shop.resource_id, "calendar_id": calendar_id},
        headers=shop.headers,
    )
    assert response.status_code == 200, response.text
    consent = httpx.get(response.json()["authorization_url"], follow_redirects=False)
    assert consent.status_code == 302
    callback = urlsplit(consent.headers["location"])
    answer = await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    assert answer.status_code == 303, answer.text
    outcome = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    return outcome


async def connected(client: Client, make_tenant: Any, google: FakeGoogle) -> tuple[Shop, UUID]:
    shop = await make_shop(client, make_tenant)
    outcome = await connect(client, shop)
    assert outcome["outcome"] == "connected", outcome
    return shop, UUID(outcome["connection_id"])


async def blocks(db: asyncpg.Connection, shop: Shop) -> dict[str, tuple[datetime, datetime]]:
    rows = await db.fetch(
        "SELECT external_id, lower(during) AS s, upper(during) AS e FROM sched_busy_blocks "
        "WHERE resource_id = $1 AND source = 'google'",
        UUID(shop.resource_id),
    )
    return {row["external_id"]: (row["s"], row["e"]) for row in rows}


def soon(hours: int = 24) -> datetime:
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


# ---------------------------------------------------------------------------- connect
async def test_connect_stores_an_encrypted_grant_and_redirects_with_the_outcome(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop = await make_shop(client, make_tenant)
    response = await client.post(
        "/api/calendars/google/connect", json={"resource_id": shop.resource_id}, headers=shop.headers
    )
    url = urlsplit(response.json()["authorization_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/o/oauth2/v2/auth"
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert query["redirect_uri"] == "http://127.0.0.1:8000/oauth/google/callback"
    assert "calendar.events.owned" in query["scope"] and "calendar.freebusy" in query["scope"]

    consent = httpx.get(response.json()["authorization_url"], follow_redirects=False)
    callback = urlsplit(consent.headers["location"])
    answer = await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith(UI + "?")
    outcome = parse_qs(urlsplit(answer.headers["location"]).query)
    assert outcome["outcome"] == ["connected"] and outcome["provider"] == ["google"]

    row = await db.fetchrow("SELECT * FROM calendar_connections")
    assert row["status"] == "active" and str(row["resource_id"]) == shop.resource_id
    assert row["calendar_id"] == "primary" and row["tenant_id"] == UUID(shop.tenant_id)
    refresh_tokens = list(google.state.refresh_tokens)
    assert not any(token in row["refresh_token_encrypted"] for token in refresh_tokens)  # encrypted at rest
    assert keys.decrypt(row["refresh_token_encrypted"]) == refresh_tokens[0]
    queued = await db.fetch("SELECT message->>'actor_name' AS actor FROM dramatiq.queue")
    assert sorted(r["actor"] for r in queued) == ["calendars_sync", "calendars_watch"]

    # The same state again (a replay), a forged one, an expired one: a 400 page, nothing stored.
    replay = await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    assert replay.status_code == 400 and "expired" in replay.text
    forged_state = query["state"][:-3] + "abc"
    forged = await client.get("/oauth/google/callback", params={"code": "x", "state": forged_state})
    assert forged.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM calendar_connections") == 1


async def test_a_callback_for_no_provider_of_ours_is_a_404(client: Client, db: asyncpg.Connection) -> None:
    response = await client.get("/oauth/outlook/callback", params={"code": "x", "state": "y"})
    assert response.status_code == 404
    assert await db.fetchval("SELECT count(*) FROM calendar_connections") == 0


async def test_an_expired_or_foreign_state_is_refused(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop = await make_shop(client, make_tenant)
    state, _ = keys.sign_state(
        tenant_id=UUID(shop.tenant_id),
        user_id="user_1",
        resource_id=UUID(shop.resource_id),
        provider="google",
        calendar_id="primary",
        now=time.time() - 3600,
    )
    response = await client.get("/oauth/google/callback", params={"code": google.issue_code(), "state": state})
    assert response.status_code == 400
    # Signed by us and fresh, but never handed out (no nonce recorded): refused as well.
    state, _ = keys.sign_state(
        tenant_id=UUID(shop.tenant_id), user_id="u", resource_id=UUID(shop.resource_id), provider="google",
        calendar_id="primary",
    )  # fmt: skip
    response = await client.get("/oauth/google/callback", params={"code": google.issue_code(), "state": state})
    assert response.status_code == 400
    assert await db.fetchval("SELECT count(*) FROM calendar_connections") == 0


async def test_a_declined_consent_or_an_unticked_scope_stores_nothing(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop = await make_shop(client, make_tenant)
    google.state.grant_scopes = "https://www.googleapis.com/auth/calendar.freebusy"  # events unticked
    assert (await connect(client, shop))["outcome"] == "missing_scope"
    response = await client.post(
        "/api/calendars/google/connect", json={"resource_id": shop.resource_id}, headers=shop.headers
    )
    state = parse_qs(urlsplit(response.json()["authorization_url"]).query)["state"][0]
    denied = await client.get(
        "/oauth/google/callback", params={"error": "access_denied", "state": state}, follow_redirects=False
    )
    assert denied.status_code == 303 and "outcome=denied" in denied.headers["location"]
    assert await db.fetchval("SELECT count(*) FROM calendar_connections") == 0


async def test_connect_refuses_another_tenants_resource(client: Client, make_tenant: Any, google: FakeGoogle) -> None:
    shop = await make_shop(client, make_tenant)
    other = await make_tenant(name="Other")
    response = await client.post(
        "/api/calendars/google/connect", json={"resource_id": shop.resource_id}, headers=other.headers
    )
    assert response.status_code == 422 and response.json()["field"] == "resource_id"


# ---------------------------------------------------------------------------- reading busy time
async def test_a_full_sync_applies_the_busy_time_rules(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    start = soon()
    busy = google.add_event(start=start, end=start + timedelta(hours=1), summary="Dentist")
    google.add_event(start=start, end=start + timedelta(hours=1), transparency="transparent")
    google.add_event(start=start, end=start + timedelta(hours=1), eventType="workingLocation")
    google.add_event(start=start, end=start + timedelta(hours=1), eventType="birthday")
    declined = {"attendees": [{"email": "o@example.com", "self": True, "responseStatus": "declined"}]}
    google.add_event(start=start, end=start + timedelta(hours=1), **declined)
    ooo = google.add_event(start=start + timedelta(hours=2), end=start + timedelta(hours=3), eventType="outOfOffice")
    ours = {"extendedProperties": {"private": {"nmc_booking_id": "b"}}}
    google.add_event(start=start, end=start + timedelta(hours=1), **ours)
    gone = google.add_event(start=start, end=start + timedelta(hours=1))
    google.cancel_event("primary", gone)
    day = (start + timedelta(days=3)).date()
    all_day = google.add_event(start=day, end=day + timedelta(days=1), summary="Vacation")
    far = google.add_event(start=start + timedelta(days=200), end=start + timedelta(days=200, hours=1))
    _, instances = google.add_recurring(first_start=start + timedelta(hours=5), duration=timedelta(minutes=30), count=3)

    report = await run_sync(connection_id)
    assert report.outcome == "synced" and report.mode == "full"
    found = await blocks(db, shop)
    assert set(found) == {busy, ooo, all_day, *instances}  # far is outside the window
    assert far not in found
    assert found[busy] == (start, start + timedelta(hours=1))
    zone = await db.fetchval("SELECT timezone FROM tenants WHERE id = $1", UUID(shop.tenant_id))
    from zoneinfo import ZoneInfo

    midnight = datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(zone))
    assert found[all_day] == (midnight, midnight + timedelta(days=1))  # the tenant's local day
    row = await db.fetchrow("SELECT sync_token, last_synced_at, next_poll_at FROM calendar_connections")
    assert row["sync_token"] and row["last_synced_at"] and row["next_poll_at"] > datetime.now(UTC)
    title = await db.fetchval("SELECT title FROM sched_busy_blocks WHERE external_id = $1", busy)
    assert title == "Dentist"


async def test_incremental_sync_follows_changes_across_pages(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    start = soon()
    first = google.add_event(start=start, end=start + timedelta(hours=1))
    second = google.add_event(start=start + timedelta(hours=2), end=start + timedelta(hours=3))
    base, instances = google.add_recurring(first_start=start, duration=timedelta(minutes=30), count=4)
    other_base, other_instances = google.add_recurring(first_start=start, duration=timedelta(minutes=15), count=2)
    google.state.page_size = 2
    google.state.empty_first_page = True
    assert (await run_sync(connection_id)).outcome == "synced"
    assert len(await blocks(db, shop)) == 2 + 4 + 2

    google.update_event("primary", first, start=start + timedelta(hours=4), end=start + timedelta(hours=5))
    google.cancel_event("primary", second)
    third = google.add_event(start=start + timedelta(hours=6), end=start + timedelta(hours=7))
    google.update_event("primary", instances[0], status="cancelled")  # one instance of a series
    google.cancel_series("primary", other_base, parent_only=True)  # a whole series, as its parent id only
    report = await run_sync(connection_id)
    assert report.mode == "incremental" and report.pages > 1
    found = await blocks(db, shop)
    assert found[first] == (start + timedelta(hours=4), start + timedelta(hours=5))
    assert second not in found and third in found
    assert instances[0] not in found and set(instances[1:]) <= set(found)
    assert not set(other_instances) & set(found)

    google.cancel_series("primary", base, parent_only=False)  # the other reading: every instance
    await run_sync(connection_id)
    assert not set(instances) & set(await blocks(db, shop))


async def test_a_410_replaces_every_block_with_a_full_sync(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    start = soon()
    kept = google.add_event(start=start, end=start + timedelta(hours=1))
    await run_sync(connection_id)
    await db.execute(
        "INSERT INTO sched_busy_blocks (id, tenant_id, resource_id, during, source, external_id, created_at, "
        "updated_at) VALUES (gen_random_uuid(), $1, $2, tstzrange(now(), now() + interval '1 hour'), 'google', "
        "'stale', now(), now())",
        UUID(shop.tenant_id),
        UUID(shop.resource_id),
    )
    google.invalidate_sync_tokens()
    report = await run_sync(connection_id)
    assert report.outcome == "synced" and report.mode == "full"
    assert set(await blocks(db, shop)) == {kept}


async def test_a_crash_mid_sync_leaves_the_previous_state(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    start = soon()
    first = google.add_event(start=start, end=start + timedelta(hours=1))
    await run_sync(connection_id)
    token = await db.fetchval("SELECT sync_token FROM calendar_connections")
    google.state.page_size = 1
    google.add_event(start=start + timedelta(hours=2), end=start + timedelta(hours=3))
    google.cancel_event("primary", first)
    google.fail("events.list", 500, times=1)  # the first page fails
    report = await run_sync(connection_id)
    assert report.outcome == "retry"
    assert set(await blocks(db, shop)) == {first}
    row = await db.fetchrow(
        "SELECT sync_token, consecutive_failures, next_poll_at, last_error FROM calendar_connections"
    )
    assert row["sync_token"] == token and row["consecutive_failures"] == 1
    assert row["next_poll_at"] > datetime.now(UTC) + timedelta(seconds=10) and "500" in row["last_error"]
    assert (await run_sync(connection_id)).outcome == "skipped"  # backing off
    assert (await run_sync(connection_id, forced=True)).outcome == "synced"
    assert first not in await blocks(db, shop)


# ---------------------------------------------------------------------------- errors
async def test_a_revoked_grant_needs_reauth_tells_the_owner_once_and_keeps_the_blocks(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    start = soon()
    event = google.add_event(start=start, end=start + timedelta(hours=1))
    await run_sync(connection_id)
    google.revoke_all()
    google.expire_access_tokens()
    assert (await run_sync(connection_id, forced=True)).outcome == "needs_reauth"
    await db.execute("UPDATE calendar_connections SET status = 'active'")  # as if a second job raced it
    assert (await run_sync(connection_id, forced=True)).outcome == "needs_reauth"
    row = await db.fetchrow("SELECT status, last_error FROM calendar_connections")
    assert row["status"] == "needs_reauth" and "invalid_grant" in row["last_error"]
    assert set(await blocks(db, shop)) == {event}
    notices = await db.fetch("SELECT id FROM outbox_events WHERE event_name = 'calendar.needs_reauth'")
    assert len(notices) == 1
    await dispatch(notices[0]["id"])  # conversations' subscriber: one owner alert
    await dispatch(notices[0]["id"])  # redelivered: still one
    alerts = await db.fetch("SELECT to_number, body FROM conv_messages WHERE kind = 'owner_alert'")
    assert len(alerts) == 1 and "Reconnect it" in alerts[0]["body"]
    owner = await db.fetchval(
        "SELECT forwarding_number FROM tenant_phone_numbers WHERE tenant_id = $1", UUID(shop.tenant_id)
    )
    assert alerts[0]["to_number"] == owner
    listed = (await client.get("/api/calendars", headers=shop.headers)).json()
    assert listed[0]["status"] == "needs_reauth" and listed[0]["next_poll_at"] is None
    metrics = (await client.get("/metrics")).text
    assert sample_value(metrics, "calendar_sync_errors_total", provider="google") == 2

    # Reconnecting resumes it: active, a full sync, and the owner would be told again next time.
    assert (await connect(client, shop))["outcome"] == "connected"
    row = await db.fetchrow("SELECT id, status, reauth_notified_at, sync_token FROM calendar_connections")
    assert row["id"] == connection_id and row["status"] == "active" and row["reauth_notified_at"] is None
    assert (await run_sync(connection_id)).mode == "full"


async def test_rate_limits_back_off_and_a_forbidden_calendar_is_an_error(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    _, connection_id = await connected(client, make_tenant, google)
    google.fail("events.list", 403, reason="rateLimitExceeded")
    assert (await run_sync(connection_id)).outcome == "retry"
    google.fail("events.list", 429)
    assert (await run_sync(connection_id, forced=True)).outcome == "retry"
    assert await db.fetchval("SELECT consecutive_failures FROM calendar_connections") == 2
    google.fail("events.list", 403, reason="forbidden")
    assert (await run_sync(connection_id, forced=True)).outcome == "error"
    assert await db.fetchval("SELECT status FROM calendar_connections") == "error"
    metrics = (await client.get("/metrics")).text
    assert sample_value(metrics, "calendar_sync_errors_total", provider="google") == 3
    assert sample_value(metrics, "calendar_sync_errors_total", provider="jobber") == 0


async def test_sync_errors_are_zero_from_the_start(client: Client, google: FakeGoogle) -> None:
    metrics = (await client.get("/metrics")).text
    assert sample_value(metrics, "calendar_sync_errors_total", provider="google") == 0
    assert sample_value(metrics, "calendar_push_channels_expiring_unrenewed", provider="google") == 0


# ---------------------------------------------------------------------------- push
def notification(
    channel_id: str, token: str | None, state: str = "exists", number: int = 2, **extra: str
) -> dict[str, str]:
    headers = {"X-Goog-Channel-ID": channel_id, "X-Goog-Message-Number": str(number), "X-Goog-Resource-State": state}
    if token is not None:
        headers["X-Goog-Channel-Token"] = token
    return {**headers, **extra}


async def test_push_notifications_queue_one_sync_and_refuse_strangers(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    _, connection_id = await connected(client, make_tenant, google)
    await db.execute("DELETE FROM dramatiq.queue")
    assert await run_watch(connection_id) == "watching"
    [channel] = google.channels()
    assert channel.token == keys.channel_token(channel.id) and channel.address.endswith("/webhooks/google/calendar")
    url = "/webhooks/google/calendar"

    sync = await client.post(url, headers=notification(channel.id, channel.token, "sync", 1))
    assert sync.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM dramatiq.queue") == 0  # a handshake changes nothing
    for number in (2, 3, 4):  # a burst
        headers = notification(channel.id, channel.token, number=number, **{"X-Goog-Resource-ID": channel.resource_id})
        answer = await client.post(url, headers=headers)
        assert answer.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM dramatiq.queue") == 1  # coalesced
    again = await client.post(url, headers=notification(channel.id, channel.token, number=3))
    assert again.status_code == 200  # Google's retry: the ledger answers it

    before = sample_value((await client.get("/metrics")).text, "webhook_signature_failures_total", provider="google")
    wrong = await client.post(url, headers=notification(channel.id, "not-the-token"))
    stranger = await client.post(url, headers=notification("f" * 32, keys.channel_token("g" * 32)))
    missing = await client.post(url, headers=notification(channel.id, None))
    assert wrong.status_code == stranger.status_code == missing.status_code == 401
    after = sample_value((await client.get("/metrics")).text, "webhook_signature_failures_total", provider="google")
    assert after == (before or 0) + 3

    await db.execute("UPDATE calendar_channels SET stopped_at = now()")  # ours once, stopped since
    stale = await client.post(url, headers=notification(channel.id, channel.token, number=9))
    assert stale.status_code == 200
    assert await db.fetchval("SELECT count(*) FROM dramatiq.queue") == 1


async def test_channels_are_renewed_before_they_expire_and_stopped_on_disconnect(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    google.state.max_ttl = 60  # Google decides: a channel of one minute
    await run_watch(connection_id)
    [first] = google.channels()
    metrics = (await client.get("/metrics")).text
    assert sample_value(metrics, "calendar_push_channels_expiring_unrenewed", provider="google") == 1
    await db.execute("DELETE FROM dramatiq.queue")
    assert (await poll_tick())["channels"] == 1  # expires within the renewal margin
    await run_watch(connection_id)
    [second] = google.channels()
    assert second.id != first.id  # a new channel, the old one stopped at Google
    stopped = await db.fetchval("SELECT stopped_at FROM calendar_channels WHERE id = $1", first.id)
    assert stopped is not None

    google.state.max_ttl = 7 * 86400
    start = soon()
    google.add_event(start=start, end=start + timedelta(hours=1))
    await run_sync(connection_id)
    assert await db.fetchval("SELECT count(*) FROM sched_busy_blocks") == 1
    refresh_token = next(iter(google.state.refresh_tokens))
    response = await client.delete(f"/api/calendars/{connection_id}", headers=shop.headers)
    assert response.status_code == 204
    assert google.channels() == []
    assert google.state.refresh_tokens[refresh_token]["revoked"] is True
    assert await db.fetchval("SELECT count(*) FROM sched_busy_blocks") == 0
    assert await db.fetchval("SELECT count(*) FROM calendar_connections") == 0


async def test_the_poll_tick_queues_due_connections_only(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    _, connection_id = await connected(client, make_tenant, google)
    await run_sync(connection_id)
    await run_watch(connection_id)
    await db.execute("DELETE FROM dramatiq.queue")
    assert (await poll_tick())["syncs"] == 0  # synced within its interval
    await db.execute("UPDATE calendar_connections SET next_poll_at = now() - interval '1 second'")
    assert (await poll_tick())["syncs"] == 1
    assert (await poll_tick())["syncs"] == 0  # one is waiting already


async def test_patch_moves_the_calendar_to_another_resource(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    start = soon()
    google.add_event("work", start=start, end=start + timedelta(hours=1))
    google.add_event(start=start, end=start + timedelta(hours=1))
    await run_sync(connection_id)
    other = (await client.post("/api/resources", json={"name": "Bo"}, headers=shop.headers)).json()["id"]
    response = await client.patch(
        f"/api/calendars/{connection_id}", json={"resource_id": other, "calendar_id": "work"}, headers=shop.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["resource_id"] == other and response.json()["calendar_id"] == "work"
    assert await blocks(db, shop) == {}
    await run_sync(connection_id)
    moved = await db.fetchval("SELECT count(*) FROM sched_busy_blocks WHERE resource_id = $1", UUID(other))
    assert moved == 1


# ---------------------------------------------------------------------------- write-back
async def test_bookings_are_written_back_once_patched_and_deleted(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    day = next_weekday(1)
    response = await client.post(
        "/api/bookings",
        json={"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(day, 10)),
              "customer_name": "Maria Lopez", "customer_phone": "+15557651234", "notes": "Leaky tap"},
        headers=shop.headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    booking_id = UUID(response.json()["id"])
    tenant_id = UUID(shop.tenant_id)
    await write_back(tenant_id, booking_id)
    await write_back(tenant_id, booking_id)  # a retry or a redelivery: still one event
    [event] = google.events()
    assert event["id"] == event_id_for(booking_id)
    assert event["summary"] == "Repair - Maria" and "+15557651234" in event["description"]
    assert "Leaky tap" in event["description"]
    assert event["extendedProperties"]["private"]["nmc_booking_id"] == str(booking_id)
    assert google.requests_to("/events", "POST") and google.requests_to(event["id"], "PATCH")  # the 409 patched
    await run_sync(connection_id)
    assert await blocks(db, shop) == {}  # our own event never comes back as a block

    moved = await client.post(
        f"/api/bookings/{booking_id}/reschedule", json={"start": iso(local(day, 13))}, headers=shop.headers
    )
    assert moved.status_code == 200, moved.text
    await write_back(tenant_id, booking_id)
    [event] = google.events()
    assert datetime.fromisoformat(event["start"]["dateTime"]) == local(day, 13)

    cancelled = await client.post(f"/api/bookings/{booking_id}/cancel", json={}, headers=shop.headers)
    assert cancelled.status_code == 200, cancelled.text
    await write_back(tenant_id, booking_id)
    await write_back(tenant_id, booking_id)  # deleting a deleted event (410) is done
    assert google.events() == []
    state = await db.fetchval("SELECT state FROM calendar_event_links WHERE booking_id = $1", booking_id)
    assert state == "deleted"


async def test_a_failed_write_back_is_visible_and_raised_for_a_retry(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, _ = await connected(client, make_tenant, google)
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(next_weekday(2), 9))}
    booking_id = UUID((await client.post("/api/bookings", json=body, headers=shop.headers)).json()["id"])
    google.fail("events.insert", 503)
    from nmc.calendars.writeback import WriteBackFailed

    with pytest.raises(WriteBackFailed):
        await write_back(UUID(shop.tenant_id), booking_id)
    [listed] = (await client.get("/api/calendars", headers=shop.headers)).json()
    assert listed["failed_write_backs"] == 1 and "503" in listed["last_error"]
    await write_back(UUID(shop.tenant_id), booking_id)  # Dramatiq's retry
    assert len(google.events()) == 1
    [listed] = (await client.get("/api/calendars", headers=shop.headers)).json()
    assert listed["failed_write_backs"] == 0


# ---------------------------------------------------------------------------- the live check
async def test_a_slot_the_calendar_holds_is_refused_live_and_learned(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    await run_sync(connection_id)
    day = next_weekday(3)
    event = google.add_event(start=local(day, 10), end=local(day, 11))  # not synced yet
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(day, 10, 30))}
    response = await client.post("/api/bookings", json=body, headers=shop.headers)
    assert response.status_code == 409, response.text
    conflict = response.json()["conflict"]
    assert conflict["kind"] == "busy_block"
    assert datetime.fromisoformat(conflict["start"]) == local(day, 10)
    assert event in await blocks(db, shop)  # fresh offers leave it out at once
    held = await client.post(
        "/api/holds",
        json={"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(day, 14))},
        headers=shop.headers,
    )
    assert held.status_code == 201, held.text
    google.add_event(start=local(day, 14), end=local(day, 15))  # taken in the calendar meanwhile
    booked = await client.post("/api/bookings", json={"hold_id": held.json()["id"]}, headers=shop.headers)
    assert booked.status_code == 409, booked.text


async def test_our_own_events_do_not_block_a_reschedule(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, _ = await connected(client, make_tenant, google)
    day = next_weekday(4)
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(day, 9))}
    booking_id = UUID((await client.post("/api/bookings", json=body, headers=shop.headers)).json()["id"])
    await write_back(UUID(shop.tenant_id), booking_id)
    moved = await client.post(
        f"/api/bookings/{booking_id}/reschedule", json={"start": iso(local(day, 9, 30))}, headers=shop.headers
    )
    assert moved.status_code == 200, moved.text


async def test_a_slow_calendar_fails_open_and_is_counted(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle, settings_env: Any
) -> None:
    shop, _ = await connected(client, make_tenant, google)
    settings_env(GOOGLE_FREEBUSY_TIMEOUT_SECONDS="0.3")
    day = next_weekday(1)
    google.add_event(start=local(day, 10), end=local(day, 11))
    google.fail("freebusy", delay=2)
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(day, 10))}
    started = time.monotonic()
    response = await client.post("/api/bookings", json=body, headers=shop.headers)
    assert response.status_code == 201, response.text  # booked on the synced state
    assert time.monotonic() - started < 1.5
    metrics = (await client.get("/metrics")).text
    assert sample_value(metrics, "calendar_freebusy_fail_open_total", provider="google") == 1


async def test_a_resource_without_a_calendar_is_not_asked(client: Client, make_tenant: Any, google: FakeGoogle) -> None:
    shop = await make_shop(client, make_tenant)
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(next_weekday(0), 9))}
    assert (await client.post("/api/bookings", json=body, headers=shop.headers)).status_code == 201
    assert google.requests_to("freeBusy") == []


async def test_the_ops_query_shows_connections(client: Client, make_tenant: Any, google: FakeGoogle) -> None:
    from nmc.ops import run_named_query

    await connected(client, make_tenant, google)
    [row] = await run_named_query("calendar_connections")
    assert row["status"] == "active" and row["provider"] == "google"


def test_day_helpers_are_consistent() -> None:
    assert isinstance(next_weekday(0), date)


async def test_booking_events_queue_the_write_back_for_the_jobs_process(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, _ = await connected(client, make_tenant, google)
    await db.execute("DELETE FROM dramatiq.queue")
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(next_weekday(3), 9))}
    booking_id = (await client.post("/api/bookings", json=body, headers=shop.headers)).json()["id"]
    event_id = await db.fetchval("SELECT id FROM outbox_events WHERE event_name = 'booking.confirmed'")
    await dispatch(event_id)
    queued = await db.fetch("SELECT message FROM dramatiq.queue")
    [message] = [json.loads(row["message"]) if isinstance(row["message"], str) else row["message"] for row in queued]
    assert message["actor_name"] == "calendars_write_back" and message["queue_name"] == "calendars"
    assert message["args"] == [shop.tenant_id, booking_id]
    assert google.events() == []  # nothing is written in the worker: the jobs process does it


async def test_just_calendars_sync_prints_what_changed(
    client: Client, db: asyncpg.Connection, make_tenant: Any, google: FakeGoogle
) -> None:
    shop, connection_id = await connected(client, make_tenant, google)
    start = soon()
    google.add_event(start=start, end=start + timedelta(hours=1))
    env = {**google.settings, "DATABASE_URL": os.environ["DATABASE_URL"]}
    result = run_cli("calendars", "sync", "--connection", str(connection_id), "--full", env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert f"{connection_id}: full sync, 1 events in 1 page(s): 1 busy block(s) written" in result.stdout
    assert len(await blocks(db, shop)) == 1
    refused = run_cli("calendars", "sync", env=env, check=False)
    assert refused.returncode != 0 and "--connection ID, --tenant ID or --all" in refused.stderr

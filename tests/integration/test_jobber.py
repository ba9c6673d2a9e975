"""Jobber sync (issue #14) on the real app and database, against the fake Jobber (tests/fakes/jobber.py).

Jobs-process work (syncs, a webhook's visit, write-back) is called in-process here, as the Dramatiq actors
call it; tests/e2e/test_jobber_e2e.py runs it in the real processes. Webhook deliveries are the fake's
own (signed by it), held and then posted to the in-process app in the order a test wants.
"""

from __future__ import annotations

import asyncio
import json
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
from nmc.calendars.jobber import JOBBER, marker
from nmc.calendars.provider import BookingEvent
from nmc.calendars.service import Tokens, connect_jobber_token
from nmc.calendars.store import get as get_connection
from nmc.calendars.sync import poll_tick, run_item, run_sync
from nmc.calendars.writeback import write_back
from nmc.db import raw_connection, session_scope
from nmc.events import dispatch
from tests.fakes.jobber import FakeJobber
from tests.integration.test_observability import sample_value
from tests.integration.test_scheduling_api import NY, Shop, iso, local, make_shop, next_weekday

Client = AsyncTestClient[Litestar]
UI = "https://app.example.com/settings/calendars"
NOWHERE = "http://127.0.0.1:9/webhooks/jobber"  # deliveries are held, then posted by the test


@pytest.fixture(scope="module")
def jobber_server() -> Iterator[FakeJobber]:
    with FakeJobber(webhook_url=NOWHERE) as fake:
        yield fake


@pytest.fixture
def jobber(jobber_server: FakeJobber, settings_env: Any) -> FakeJobber:
    jobber_server.reset()
    jobber_server.webhook_url = NOWHERE
    jobber_server.hold_deliveries()
    JOBBER.buckets.clear()
    JOBBER.costs.clear()
    settings_env(**jobber_server.settings, GOOGLE_REDIRECT_UI_URL=UI)
    return jobber_server


async def connect(client: Client, shop: Shop) -> dict[str, str]:
    """The owner's OAuth round trip: connect → consent (the fake agrees) → callback → redirect."""
    response = await client.post(
        "/api/calendars/jobber/connect", json={"resource_id": shop.resource_id}, headers=shop.headers
    )
    assert response.status_code == 200, response.text
    consent = httpx.get(response.json()["authorization_url"], follow_redirects=False)
    assert consent.status_code == 302, consent.text
    callback = urlsplit(consent.headers["location"])
    answer = await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}


async def connected(client: Client, make_tenant: Any, jobber: FakeJobber) -> tuple[Shop, UUID, str]:
    shop = await make_shop(client, make_tenant)
    account = jobber.add_account("Joe's Plumbing", timezone="America/New_York")
    jobber.consent_as(account)
    outcome = await connect(client, shop)
    assert outcome["outcome"] == "connected", outcome
    assert await deliver(client, jobber) == [200]  # APP_CONNECT: answered, nothing to do
    return shop, UUID(outcome["connection_id"]), account


async def map_users(client: Client, shop: Shop, connection_id: UUID, mapping: dict[str, str | None]) -> Any:
    body = {"mappings": [{"jobber_user_id": u, "resource_id": r} for u, r in mapping.items()]}
    return await client.patch(f"/api/calendars/{connection_id}/jobber-users", json=body, headers=shop.headers)


async def add_resource(client: Client, shop: Shop, name: str) -> str:
    response = await client.post("/api/resources", json={"name": name}, headers=shop.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def blocks(db: asyncpg.Connection, resource_id: str) -> dict[str, tuple[datetime, datetime]]:
    rows = await db.fetch(
        "SELECT external_id, lower(during) AS s, upper(during) AS e FROM sched_busy_blocks "
        "WHERE resource_id = $1 AND source = 'jobber'",
        UUID(resource_id),
    )
    return {row["external_id"]: (row["s"], row["e"]) for row in rows}


def soon(hours: int = 24) -> datetime:
    return (datetime.now(UTC) + timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


async def deliver(client: Client, jobber: FakeJobber, *, reverse: bool = False) -> list[int]:
    """Post the fake's held deliveries (signed by it) to our webhook endpoint; their statuses."""
    held = [d for d in jobber.deliveries() if d.status is None]
    statuses = []
    for delivery in reversed(held) if reverse else held:
        answer = await client.post(
            "/webhooks/jobber",
            content=delivery.body,
            headers={"Content-Type": "application/json", "X-Jobber-Hmac-SHA256": delivery.signature},
        )
        delivery.status = answer.status_code
        statuses.append(answer.status_code)
    return statuses


async def queued(db: asyncpg.Connection, actor: str) -> list[list[Any]]:
    rows = await db.fetch(
        "SELECT message->'args' AS args FROM dramatiq.queue WHERE message->>'actor_name' = $1 ORDER BY message_id",
        actor,
    )
    return [json.loads(row["args"]) for row in rows]


# ---------------------------------------------------------------------------- connect
async def test_connect_stores_the_account_with_encrypted_tokens(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop = await make_shop(client, make_tenant)
    account = jobber.add_account("Joe's Plumbing", timezone="America/New_York")
    jobber.consent_as(account)
    response = await client.post(
        "/api/calendars/jobber/connect", json={"resource_id": shop.resource_id}, headers=shop.headers
    )
    url = urlsplit(response.json()["authorization_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/api/oauth/authorize" and query["client_id"] == jobber.client_id
    assert query["redirect_uri"] == "http://127.0.0.1:8000/oauth/jobber/callback"
    consent = httpx.get(response.json()["authorization_url"], follow_redirects=False)
    callback = urlsplit(consent.headers["location"])
    answer = await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    outcome = parse_qs(urlsplit(answer.headers["location"]).query)
    assert outcome["outcome"] == ["connected"] and outcome["provider"] == ["jobber"]

    row = await db.fetchrow("SELECT * FROM calendar_connections")
    assert row["provider"] == "jobber" and row["calendar_id"] == account and row["status"] == "active"
    access = keys.decrypt(row["access_token_encrypted"])
    assert access.count(".") == 2 and access not in row["access_token_encrypted"]  # a JWT, encrypted at rest
    assert keys.decrypt(row["refresh_token_encrypted"]) != ""
    queued_actors = await db.fetch("SELECT message->>'actor_name' AS actor FROM dramatiq.queue")
    assert "calendars_sync" in {r["actor"] for r in queued_actors}

    replay = await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)
    assert replay.status_code == 400  # single-use state

    # A reconnect renews the same connection; another business cannot take the same account.
    assert (await connect(client, shop))["outcome"] == "connected"
    assert await db.fetchval("SELECT count(*) FROM calendar_connections") == 1
    other = await make_shop(client, make_tenant)
    assert (await connect(client, other))["outcome"] == "account_in_use"
    assert await db.fetchval("SELECT count(*) FROM calendar_connections") == 1


async def test_connect_refuses_what_cannot_be_connected(
    client: Client, make_tenant: Any, jobber: FakeJobber, settings_env: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    foreign = await make_shop(client, make_tenant)
    response = await client.post(
        "/api/calendars/jobber/connect", json={"resource_id": foreign.resource_id}, headers=shop.headers
    )
    assert response.status_code == 422 and response.json()["field"] == "resource_id"
    bad = await client.post("/api/calendars/jobber/connect", json={"resource_id": "nope"}, headers=shop.headers)
    assert bad.status_code == 422
    settings_env(JOBBER_CLIENT_ID="")
    off = await client.post(
        "/api/calendars/jobber/connect", json={"resource_id": shop.resource_id}, headers=shop.headers
    )
    assert off.status_code == 422 and "JOBBER_CLIENT_ID" in off.json()["detail"]


async def test_a_personal_token_connects_without_oauth(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop = await make_shop(client, make_tenant)
    account = jobber.add_account("Token Plumbing", timezone="America/New_York")
    token = jobber.grant_tokens(account)["access_token"]
    outcome = await connect_jobber_token(UUID(shop.tenant_id), UUID(shop.resource_id), token)
    assert outcome.outcome == "connected" and outcome.connection_id is not None
    row = await db.fetchrow("SELECT calendar_id, refresh_token_encrypted FROM calendar_connections")
    assert row["calendar_id"] == account and keys.decrypt(row["refresh_token_encrypted"]) == ""
    user = jobber.add_user(account, "Ana Tech")
    assert (await map_users(client, shop, outcome.connection_id, {user: shop.resource_id})).status_code == 200
    visit = jobber.add_visit(account, start=soon(), end=soon() + timedelta(hours=1), user_ids=[user], notify=False)
    assert (await run_sync(outcome.connection_id)).outcome == "synced"
    assert set(await blocks(db, shop.resource_id)) == {visit}

    jobber.expire_tokens(account)  # a personal token cannot be refreshed: the owner sets a new one
    assert (await run_sync(outcome.connection_id, forced=True)).outcome == "needs_reauth"
    with pytest.raises(ValueError, match="JOBBER_API_TOKEN"):
        await connect_jobber_token(UUID(shop.tenant_id), UUID(shop.resource_id), "not-a-token")


# ---------------------------------------------------------------------------- users → resources
async def test_users_are_listed_and_mapped_with_bad_input_refused(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana = jobber.add_user(account, "Ana Tech", "ana@example.com")
    bo = jobber.add_user(account, "Bo Helper")
    url = f"/api/calendars/{connection_id}/jobber-users"
    listed = (await client.get(url, headers=shop.headers)).json()
    assert [(u["id"], u["name"], u["resource_id"]) for u in listed] == [
        (ana, "Ana Tech", None),
        (bo, "Bo Helper", None),
    ]
    assert listed[0]["email"] == "ana@example.com"

    other = await make_shop(client, make_tenant)
    for mapping, field in (
        ({ana: other.resource_id}, "mappings[0].resource_id"),  # another tenant's resource
        ({ana: "00000000-0000-0000-0000-000000000001"}, "mappings[0].resource_id"),
        ({"Z2lkOi8vSm9iYmVyL1VzZXIvOTk5": shop.resource_id}, "mappings[0].jobber_user_id"),
    ):
        refused = await map_users(client, shop, connection_id, mapping)
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    malformed = await client.patch(url, json={"mappings": [{"jobber_user_id": ana}]}, headers=shop.headers)
    assert malformed.status_code == 422
    assert await db.fetchval("SELECT count(*) FROM calendar_jobber_users") == 0
    strangers = await client.get(url, headers=other.headers)
    assert strangers.status_code == 404

    mapped = await map_users(client, shop, connection_id, {ana: shop.resource_id})
    assert mapped.status_code == 200, mapped.text
    assert {u["id"]: u["resource_id"] for u in mapped.json()} == {ana: shop.resource_id, bo: None}
    listed = (await client.get(url, headers=shop.headers)).json()
    assert {u["id"]: u["resource_id"] for u in listed} == {ana: shop.resource_id, bo: None}

    jobber.fail("Users", 503)
    down = await client.get(url, headers=shop.headers)
    assert down.status_code == 502


# ---------------------------------------------------------------------------- sync
async def test_a_sync_blocks_mapped_users_visits_by_the_busy_time_rules(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana, bo, cy = (jobber.add_user(account, n) for n in ("Ana Tech", "Bo Helper", "Cy Unmapped"))
    second = await add_resource(client, shop, "Bo")
    assert (await map_users(client, shop, connection_id, {ana: shop.resource_id, bo: second})).status_code == 200
    start = soon()
    timed = jobber.add_visit(account, start=start, end=start + timedelta(hours=2), user_ids=[ana], notify=False)
    both = jobber.add_visit(
        account, start=start + timedelta(days=1), end=start + timedelta(days=1, hours=1), user_ids=[ana, bo],
        notify=False,
    )  # fmt: skip
    day = next_weekday(2)
    all_day = jobber.add_visit(account, start=day, user_ids=[bo], notify=False)
    jobber.add_visit(account, start=None, user_ids=[ana], notify=False)  # unscheduled
    jobber.add_visit(account, start=start, end=start + timedelta(hours=1), user_ids=[cy], notify=False)  # unmapped
    done = jobber.add_visit(account, start=start, end=start + timedelta(hours=1), user_ids=[ana], notify=False)
    jobber.complete_visit(done, notify=False)
    cancelled = jobber.add_visit(account, start=start, end=start + timedelta(hours=1), user_ids=[ana], notify=False)
    jobber.update_visit(cancelled, status="CANCELLED", notify=False)
    series = jobber.add_recurring_visits(account, 6, first_start=start + timedelta(hours=3), user_ids=[ana],
                                         notify=False)  # fmt: skip
    far = jobber.add_visit(account, start=start + timedelta(days=400), end=start + timedelta(days=400, hours=1),
                           user_ids=[ana], notify=False)  # fmt: skip

    report = await run_sync(connection_id)
    assert report.outcome == "synced" and report.mode == "full", report
    ana_blocks = await blocks(db, shop.resource_id)
    assert set(ana_blocks) == {timed, both, *series}
    assert far not in ana_blocks
    assert ana_blocks[timed] == (start, start + timedelta(hours=2))
    bo_blocks = await blocks(db, second)
    assert set(bo_blocks) == {both, all_day}
    assert bo_blocks[all_day] == (local(day, 0), local(day + timedelta(days=1), 0))  # the whole local day
    assert all(c.variables["first"] <= 40 for c in jobber.calls("Visits"))  # small pages

    # Moved, deleted, completed, cancelled, reassigned in Jobber without a webhook: the next sync (the
    # poll's) re-pulls the window and frees the old time.
    jobber.update_visit(timed, start=start + timedelta(hours=5), end=start + timedelta(hours=6), notify=False)
    jobber.delete_visit(series[0], notify=False)
    jobber.complete_visit(series[1], notify=False)
    jobber.update_visit(series[2], status="CANCELLED", notify=False)
    jobber.update_visit(both, user_ids=[bo], notify=False)
    jobber.update_visit(series[3], unschedule=True, notify=False)
    report = await run_sync(connection_id)
    assert report.outcome == "synced" and report.mode == "incremental", report
    ana_blocks = await blocks(db, shop.resource_id)
    assert set(ana_blocks) == {timed, *series[4:]}
    assert ana_blocks[timed] == (start + timedelta(hours=5), start + timedelta(hours=6))
    assert set(await blocks(db, second)) == {both, all_day}

    # Unmapping Bo frees his resource at once; his visits block nothing from now on.
    assert (await map_users(client, shop, connection_id, {bo: None})).status_code == 200
    assert await blocks(db, second) == {}
    await run_sync(connection_id)
    assert await blocks(db, second) == {}


async def test_the_poll_tick_queues_due_jobber_connections(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    _, connection_id, _ = await connected(client, make_tenant, jobber)
    await db.execute("DELETE FROM dramatiq.queue")
    await db.execute("UPDATE calendar_connections SET next_poll_at = now() - interval '1 second'")
    assert (await poll_tick())["syncs"] == 1
    assert await queued(db, "calendars_sync") == [[str(connection_id)]]
    assert (await poll_tick())["syncs"] == 0  # requested already
    assert await queued(db, "calendars_watch") == []  # Jobber's webhooks are app-wide: no channels


# ---------------------------------------------------------------------------- webhooks
async def test_webhooks_are_verified_deduped_and_queue_the_visit(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana = jobber.add_user(account, "Ana Tech")
    await map_users(client, shop, connection_id, {ana: shop.resource_id})
    await db.execute("DELETE FROM dramatiq.queue")
    jobber.set_duplicate_deliveries()
    start = soon()
    visit = jobber.add_visit(account, start=start, end=start + timedelta(hours=1), user_ids=[ana])
    assert await deliver(client, jobber) == [200, 200]
    assert await queued(db, "calendars_sync_item") == [[str(connection_id), visit]]  # the copy was deduped
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE provider = 'jobber'") == 1
    assert await blocks(db, shop.resource_id) == {}  # nothing asked of Jobber inside the webhook
    assert (await run_item(connection_id, visit)).outcome == "synced"
    assert set(await blocks(db, shop.resource_id)) == {visit}
    far = start + timedelta(days=400)
    jobber.update_visit(visit, start=far, end=far + timedelta(hours=1), notify=False)
    assert (await run_item(connection_id, visit)).outcome == "synced"
    assert await blocks(db, shop.resource_id) == {}  # moved out of the window: not held, as a sync would do
    jobber.update_visit(visit, start=start, end=start + timedelta(hours=1), notify=False)
    assert (await run_item(connection_id, visit)).outcome == "synced"
    assert set(await blocks(db, shop.resource_id)) == {visit}

    body = json.dumps({"data": {"webHookEvent": {"topic": "VISIT_UPDATE", "accountId": account, "itemId": visit,
                                                  "occurredAt": "2026-12-01T10:00:00Z"}}}).encode()  # fmt: skip
    before = sample_value((await client.get("/metrics")).text, "webhook_signature_failures_total", provider="jobber")
    for signature in ("bm90LXRoZS1zaWduYXR1cmU=", None):
        headers = {"Content-Type": "application/json"}
        if signature:
            headers["X-Jobber-Hmac-SHA256"] = signature
        refused = await client.post("/webhooks/jobber", content=body, headers=headers)
        assert refused.status_code == 401
    after = sample_value((await client.get("/metrics")).text, "webhook_signature_failures_total", provider="jobber")
    assert after == (before or 0) + 2

    jobber.set_duplicate_deliveries(False)
    jobber.send_webhook("REQUEST_CREATE", account, "Z2lkOi8vSm9iYmVyL1JlcXVlc3QvMQ==")  # not ours to act on
    jobber.set_legacy_occured_at()
    jobber.update_visit(visit, title="Renamed")  # older apps spell it occuredAt
    stranger = jobber.add_account("Not connected")
    jobber.send_webhook("VISIT_CREATE", stranger, "Z2lkOi8vSm9iYmVyL1Zpc2l0Lzk5")
    assert await deliver(client, jobber) == [200, 200, 200]
    assert [args[1] for args in await queued(db, "calendars_sync_item")] == [visit, visit]


async def test_deliveries_out_of_order_end_in_jobbers_current_state(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana = jobber.add_user(account, "Ana Tech")
    await map_users(client, shop, connection_id, {ana: shop.resource_id})
    await db.execute("DELETE FROM dramatiq.queue")
    start = soon()
    visit = jobber.add_visit(account, start=start, end=start + timedelta(hours=1), user_ids=[ana])
    jobber.update_visit(visit, start=start + timedelta(hours=2), end=start + timedelta(hours=3))
    moved_twice = jobber.add_visit(account, start=start, end=start + timedelta(hours=1), user_ids=[ana])
    jobber.delete_visit(moved_twice)
    assert await deliver(client, jobber, reverse=True) == [200, 200, 200, 200]  # destroy first, create last
    for connection, item in await queued(db, "calendars_sync_item"):
        assert (await run_item(UUID(connection), item)).outcome == "synced"
    assert await blocks(db, shop.resource_id) == {visit: (start + timedelta(hours=2), start + timedelta(hours=3))}


async def test_app_disconnect_needs_reauth_tells_the_owner_once_and_stops_polling(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    jobber.set_duplicate_deliveries()
    jobber.disconnect_app(account)
    assert await deliver(client, jobber) == [200, 200]
    row = await db.fetchrow("SELECT status, last_error FROM calendar_connections")
    assert row["status"] == "needs_reauth" and "APP_DISCONNECT" in row["last_error"]
    notices = await db.fetch("SELECT id FROM outbox_events WHERE event_name = 'calendar.needs_reauth'")
    assert len(notices) == 1
    await dispatch(notices[0]["id"])
    alerts = await db.fetch("SELECT body FROM conv_messages WHERE kind = 'owner_alert'")
    assert len(alerts) == 1 and "Reconnect it" in alerts[0]["body"]
    await db.execute("DELETE FROM dramatiq.queue")
    await db.execute("UPDATE calendar_connections SET next_poll_at = now() - interval '1 second'")
    assert (await poll_tick())["syncs"] == 0
    assert (await run_sync(connection_id, forced=True)).outcome == "skipped"
    listed = (await client.get("/api/calendars", headers=shop.headers)).json()
    assert listed[0]["status"] == "needs_reauth"


# ---------------------------------------------------------------------------- tokens
async def test_two_refreshes_racing_keep_a_working_token(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    _, connection_id, account = await connected(client, make_tenant, jobber)
    jobber.expire_tokens(account)
    async with session_scope() as session:
        row = await get_connection(await raw_connection(session), connection_id)
    assert row is not None
    first, second = Tokens(row), Tokens(row)  # two jobs read the row before either refreshed
    tokens = await asyncio.gather(first.refresh(), second.refresh())
    assert tokens[0] == tokens[1]
    assert jobber.refresh_count(account) == 1 and jobber.refused_refresh_count(account) == 0
    stored = await db.fetchrow("SELECT access_token_encrypted, refresh_token_encrypted FROM calendar_connections")
    assert keys.decrypt(stored["access_token_encrypted"]) == tokens[0]
    # The stored refresh token is the rotated one: the next refresh works too.
    jobber.expire_tokens(account)
    assert (await run_sync(connection_id, forced=True)).outcome == "synced"
    assert jobber.refresh_count(account) == 2 and jobber.refused_refresh_count(account) == 0


async def test_a_401_refreshes_once_and_a_revoked_grant_needs_reauth(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    _, connection_id, account = await connected(client, make_tenant, jobber)
    jobber.expire_tokens(account)  # stored as valid for an hour, refused by Jobber: refreshed on the 401
    assert (await run_sync(connection_id)).outcome == "synced"
    assert jobber.refresh_count(account) == 1
    jobber.fail("Visits", 503)
    assert (await run_sync(connection_id, forced=True)).outcome == "retry"
    jobber.revoke_tokens(account)
    assert (await run_sync(connection_id, forced=True)).outcome == "needs_reauth"
    metrics = (await client.get("/metrics")).text
    assert sample_value(metrics, "calendar_sync_errors_total", provider="jobber") == 2


# ---------------------------------------------------------------------------- throttling
async def test_a_throttled_account_waits_or_is_deferred_while_others_keep_syncing(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, busy_id, busy = await connected(client, make_tenant, jobber)
    other_shop, quiet_id, quiet = await connected(client, make_tenant, jobber)
    for shop_, connection_id, account in ((shop, busy_id, busy), (other_shop, quiet_id, quiet)):
        user = jobber.add_user(account, "Ana Tech")
        await map_users(client, shop_, connection_id, {user: shop_.resource_id})
        jobber.seed_visits(account, 100, [user], soon(), 20)
    assert (await run_sync(busy_id)).outcome == "synced"  # the bucket is read from every answer
    assert JOBBER.buckets, "the throttle status was remembered"

    # A short wait: within the cap, the sync waits for the bucket and succeeds.
    jobber.drain_bucket(busy, to=0)
    jobber.set_bucket(busy, restore_rate=2000)
    report = await run_sync(busy_id, forced=True)
    assert report.outcome == "synced" and report.events == 100, report
    assert any(c.throttled for c in jobber.calls("Visits", account=busy))  # THROTTLED, waited for, retried

    # A long one: deferred (not an error), requeued with the delay; the other account syncs meanwhile.
    await db.execute("DELETE FROM dramatiq.queue")
    jobber.drain_bucket(busy, to=0)
    jobber.set_bucket(busy, restore_rate=10)
    JOBBER.buckets.clear()  # as a new jobs process would: the THROTTLED answer itself tells
    report = await run_sync(busy_id, forced=True)
    assert report.outcome == "deferred", report
    row = await db.fetchrow("SELECT consecutive_failures, next_poll_at FROM calendar_connections WHERE id = $1",
                            busy_id)  # fmt: skip
    assert row["consecutive_failures"] == 0 and row["next_poll_at"] > datetime.now(UTC) + timedelta(seconds=10)
    delayed = await db.fetch(
        "SELECT message->'options'->>'eta' AS eta FROM dramatiq.queue WHERE message->>'actor_name' = 'calendars_sync'"
    )
    assert len(delayed) == 1 and delayed[0]["eta"] is not None
    assert (await run_sync(quiet_id, forced=True)).outcome == "synced"
    assert len(await blocks(db, other_shop.resource_id)) == 100
    metrics = (await client.get("/metrics")).text
    assert sample_value(metrics, "calendar_sync_errors_total", provider="jobber") == 0

    jobber.fail("Visits", 429)
    assert (await run_sync(quiet_id, forced=True)).outcome == "retry"  # 429: backoff, counted


# ---------------------------------------------------------------------------- write-back
async def book(client: Client, shop: Shop, day: date, hour: int, phone: str = "+15557651234") -> UUID:
    response = await client.post(
        "/api/bookings",
        json={"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": iso(local(day, hour)),
              "customer_name": "Maria Lopez", "customer_phone": phone, "notes": "Leaky tap"},
        headers=shop.headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return UUID(response.json()["id"])


async def test_a_booking_is_written_back_once_rescheduled_and_archived(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana = jobber.add_user(account, "Ana Tech")
    await map_users(client, shop, connection_id, {ana: shop.resource_id})
    known = jobber.add_client(account, "Maria", "Lopez", ["(555) 765-1234"])
    day = next_weekday(1)
    booking_id = await book(client, shop, day, 10)
    tenant_id = UUID(shop.tenant_id)
    await write_back(tenant_id, booking_id)
    await write_back(tenant_id, booking_id)  # a retry or a redelivery: still one request
    [request] = jobber.requests(account)
    assert marker(booking_id) in request["title"] and request["title"].startswith("Repair - Maria")
    assert request["clientId"] == known  # found by phone, not created again
    assert len(jobber.clients(account)) == 1
    assert request["assessment"]["assignedUserIds"] == [ana]
    assert request["assessment"]["startAt"] == local(day, 10) and request["assessment"]["endAt"] == local(day, 11)
    assert len(request["notes"]) == 1 and "Leaky tap" in request["notes"][0]
    assert jobber.call_count("RequestCreate") == 1
    link = await db.fetchrow("SELECT event_id, state FROM calendar_event_links WHERE booking_id = $1", booking_id)
    assert link["state"] == "written" and link["event_id"] == f"{request['id']} {request['assessment']['id']}"

    moved = await client.post(
        f"/api/bookings/{booking_id}/reschedule", json={"start": iso(local(day, 14))}, headers=shop.headers
    )
    assert moved.status_code == 200, moved.text
    await write_back(tenant_id, booking_id)
    [request] = jobber.requests(account)
    assert request["assessment"]["startAt"] == local(day, 14)
    assert jobber.call_count("AssessmentEditSchedule") == 1 and jobber.call_count("RequestCreate") == 1

    cancelled = await client.post(f"/api/bookings/{booking_id}/cancel", json={}, headers=shop.headers)
    assert cancelled.status_code == 200, cancelled.text
    await write_back(tenant_id, booking_id)
    await write_back(tenant_id, booking_id)  # archived already: done
    [request] = jobber.requests(account)
    assert request["archived"]
    state = await db.fetchval("SELECT state FROM calendar_event_links WHERE booking_id = $1", booking_id)
    assert state == "deleted"


async def test_a_crash_between_create_and_record_never_makes_a_second_request(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana = jobber.add_user(account, "Ana Tech")
    await map_users(client, shop, connection_id, {ana: shop.resource_id})
    day = next_weekday(3)
    booking_id = await book(client, shop, day, 9, phone="+15550001111")
    # The job created the request in Jobber and died before recording it.
    token = jobber.grant_tokens(account)["access_token"]
    event = BookingEvent(booking_id, local(day, 9), local(day, 10), NY, "Repair - Maria", "Phone: +15550001111",
                         customer_phone="+15550001111", customer_name="Maria Lopez")  # fmt: skip
    created = await JOBBER.write_booking(token, ana, event)
    assert await db.fetchval("SELECT count(*) FROM calendar_event_links") == 0
    await write_back(UUID(shop.tenant_id), booking_id)  # Dramatiq's retry
    assert len(jobber.requests(account)) == 1 and jobber.call_count("RequestCreate") == 1
    assert len(jobber.clients(account)) == 1  # the client created the first time
    link = await db.fetchrow("SELECT event_id, state FROM calendar_event_links WHERE booking_id = $1", booking_id)
    assert link["state"] == "written" and link["event_id"] == created


async def test_a_user_error_is_a_refusal_recorded_on_the_link(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana = jobber.add_user(account, "Ana Tech")
    await map_users(client, shop, connection_id, {ana: shop.resource_id})
    booking_id = await book(client, shop, next_weekday(4), 11)
    jobber.fail("RequestCreate", 200, body={"data": {"requestCreate": {"request": None, "userErrors": [
        {"message": "Client not found", "path": ["input", "clientId"]}]}}})  # fmt: skip
    lines = await write_back(UUID(shop.tenant_id), booking_id)  # a refusal is not retried
    assert any("not retried" in line and "Client not found" in line for line in lines), lines
    link = await db.fetchrow("SELECT state, last_error FROM calendar_event_links WHERE booking_id = $1", booking_id)
    assert link["state"] == "failed" and "Client not found" in link["last_error"]
    assert jobber.requests(account) == []


async def test_an_unmapped_resources_booking_is_not_written_to_jobber(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, _, account = await connected(client, make_tenant, jobber)
    booking_id = await book(client, shop, next_weekday(2), 15)
    assert await write_back(UUID(shop.tenant_id), booking_id) == []
    assert jobber.requests(account) == [] and jobber.call_count("ClientsByPhone") == 0


async def test_disconnect_removes_the_mapped_resources_blocks(
    client: Client, db: asyncpg.Connection, make_tenant: Any, jobber: FakeJobber
) -> None:
    shop, connection_id, account = await connected(client, make_tenant, jobber)
    ana = jobber.add_user(account, "Ana Tech")
    second = await add_resource(client, shop, "Bo")
    await map_users(client, shop, connection_id, {ana: second})
    jobber.add_visit(account, start=soon(), end=soon() + timedelta(hours=1), user_ids=[ana], notify=False)
    await run_sync(connection_id)
    assert len(await blocks(db, second)) == 1
    # The connection is its account: another calendar id is refused; listing it under another resource
    # moves nothing of the mapped users' blocks.
    refused = await client.patch(f"/api/calendars/{connection_id}", json={"calendar_id": "x"}, headers=shop.headers)
    assert refused.status_code == 422 and refused.json()["field"] == "calendar_id"
    moved = await client.patch(f"/api/calendars/{connection_id}", json={"resource_id": second}, headers=shop.headers)
    assert moved.status_code == 200 and moved.json()["resource_id"] == second
    assert len(await blocks(db, second)) == 1
    gone = await client.delete(f"/api/calendars/{connection_id}", headers=shop.headers)
    assert gone.status_code == 204
    assert await blocks(db, second) == {}
    assert await db.fetchval("SELECT count(*) FROM calendar_jobber_users") == 0


async def test_signed_but_malformed_deliveries_are_refused_naming_the_field(
    client: Client, db: asyncpg.Connection, jobber: FakeJobber
) -> None:
    from nmc.calendars.webhooks import jobber_signature

    async def post(body: bytes) -> httpx.Response:
        signature = jobber_signature(body, jobber.client_secret)
        headers = {"Content-Type": "application/json", "X-Jobber-Hmac-SHA256": signature}
        return await client.post("/webhooks/jobber", content=body, headers=headers)

    for body, field in (
        (b"not json", "data"),
        (b'{"data": {}}', "webHookEvent"),
        (b'{"data": {"webHookEvent": {"topic": "VISIT_UPDATE"}}}', "accountId"),
        (json.dumps({"data": {"webHookEvent": {"topic": "X" * 101, "accountId": "A"}}}).encode(), "topic"),
        (json.dumps({"data": {"webHookEvent": {"topic": "VISIT_UPDATE", "accountId": "A\u0000"}}}).encode(), ""),
    ):
        answer = await post(body)
        assert answer.status_code == 400, (body, answer.text)
        assert field in answer.text, (field, answer.text)
    too_big = await post(b'{"data": "' + b"x" * 70_000 + b'"}')
    assert too_big.status_code == 413
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE provider = 'jobber'") == 0

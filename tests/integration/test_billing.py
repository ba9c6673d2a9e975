"""Billing in-process: the real app and dispatcher on real Postgres, against the fake Stripe API.

Webhooks are the fake's own events, signed as Stripe signs them and posted to the in-process app;
the fake holds its deliveries (`delivery="hold"`) so each test says what arrives, in which order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from nmc.billing import billing_tick, count_segments, reconcile, report_usage
from nmc.billing.usage import record_usage
from tests.fakes.stripe_api import FakeStripe, sign
from tests.integration.conftest import zone_at_local_hour
from tests.integration.test_inbox_support import CALLER, dispatch_all, text_in
from tests.integration.twilio_webhooks import missed_call

WEBHOOK_SECRET = "whsec_integration"
OLD_SECRET = "whsec_previous"
PRICE = "price_base_plan"
TEXTS_PRICE = "price_texts_metered"


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@pytest.fixture
def stripe_fake(stripe_server: FakeStripe, settings_env: Any) -> FakeStripe:
    """The fake Stripe API, emptied, holding its webhooks; this process's billing pointed at it."""
    stripe_server.reset()
    stripe_server.configure(delivery="hold", webhook_secret=WEBHOOK_SECRET)
    settings_env(**stripe_server.billing_settings(WEBHOOK_SECRET, PRICE, TEXTS_PRICE))
    return stripe_server


async def post_event(
    client: AsyncTestClient[Any], event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, age: int = 0
) -> Any:
    body = json.dumps(event).encode()
    header = sign(body, secret, int(datetime.now(UTC).timestamp()) - age)
    return await client.post(
        "/webhooks/stripe", content=body, headers={"stripe-signature": header, "content-type": "application/json"}
    )


def events_by_id(fake: FakeStripe) -> dict[str, dict[str, Any]]:
    return {event["id"]: event for event in fake.events()}


async def account(db: asyncpg.Connection, tenant_id: str) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM billing_accounts WHERE tenant_id = $1", UUID(tenant_id))


async def published(db: asyncpg.Connection, name: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT payload FROM outbox_events WHERE event_name = $1 ORDER BY created_at", name)
    return [json.loads(row["payload"]) for row in rows]


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def subscribed(
    client: AsyncTestClient[Any], db: asyncpg.Connection, fake: FakeStripe, tenant: Any, **complete: Any
) -> str:
    """Checkout, the customer pays, every event delivered: the tenant's subscription id."""
    response = await client.post("/api/billing/checkout", json={}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    session_id = response.json()["url"].rsplit("/", 1)[1]
    done = fake.complete_checkout(session_id, **complete)
    events = events_by_id(fake)
    for event_id in done["events"]:
        assert (await post_event(client, events[event_id])).status_code == 200
    return str(done["subscription"])


# ---------------------------------------------------------------- trial and checkout
async def test_a_new_tenant_gets_a_trial_without_a_card(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    await dispatch_all(db)  # tenant.created -> the trial
    row = await account(db, tenant.id)
    assert row["subscription_status"] == "trialing" and row["stripe_customer_id"] is None
    assert row["texting_enabled"] and row["entitlement_reason"] == "trialing"
    assert abs(row["trial_end"] - (datetime.now(UTC) + timedelta(days=14))) < timedelta(minutes=1)
    assert row["texting_enabled_until"] == row["trial_end"]

    body = (await client.get("/api/billing", headers=tenant.headers)).json()
    assert body["texting_enabled"] is True and body["texting_reason"] == "trialing"
    assert body["subscription_status"] == "trialing" and body["plan"] is None
    assert body["usage"]["texts"] == 0 and body["billing_enabled"] is True
    assert stripe_fake.requests() == []  # nothing asked of Stripe for a trial


async def test_checkout_makes_the_customer_once_and_one_session_for_a_double_click(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant(name="Ace HVAC")
    first = await client.post("/api/billing/checkout", json={}, headers=tenant.headers)
    second = await client.post("/api/billing/checkout", headers=tenant.headers)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["url"] == second.json()["url"]
    [session] = stripe_fake.checkout_sessions()
    assert session["client_reference_id"] == tenant.id and session["metadata"] == {"tenant_id": tenant.id}
    assert session["success_url"] == "https://app.example.com/billing/done"
    creates = [r for r in stripe_fake.requests() if r["method"] == "POST"]
    assert [r["path"] for r in creates] == ["/v1/customers", "/v1/checkout/sessions"]
    assert creates[0]["params"]["metadata"] == {"tenant_id": tenant.id} and creates[0]["params"]["name"] == "Ace HVAC"
    assert all(r["idempotency_key"] for r in creates)
    assert creates[1]["params"]["line_items"] == [{"price": PRICE, "quantity": "1"}, {"price": TEXTS_PRICE}]
    # the rest of our 14-day trial carries over into Stripe's subscription
    trial_end = int(creates[1]["params"]["subscription_data"]["trial_end"])
    assert abs(trial_end - (datetime.now(UTC) + timedelta(days=14)).timestamp()) < 120
    row = await account(db, tenant.id)
    assert row["stripe_customer_id"].startswith("cus_")

    # a later checkout (the first one abandoned) reuses the customer
    await db.execute("UPDATE billing_accounts SET checkout_created_at = now() - interval '1 hour'")
    third = await client.post("/api/billing/checkout", json={"price": PRICE}, headers=tenant.headers)
    assert third.status_code == 200 and third.json()["url"] != first.json()["url"]
    assert [r["path"] for r in stripe_fake.requests() if r["method"] == "POST"].count("/v1/customers") == 1


async def test_checkout_refuses_a_price_it_does_not_offer_and_a_second_subscription(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    refused = await client.post("/api/billing/checkout", json={"price": "price_free_forever"}, headers=tenant.headers)
    assert refused.status_code == 422 and refused.json()["field"] == "price"
    await subscribed(client, db, stripe_fake, tenant)
    again = await client.post("/api/billing/checkout", json={}, headers=tenant.headers)
    assert again.status_code == 409
    portal = await client.post("/api/billing/portal", headers=tenant.headers)
    assert portal.status_code == 200 and "/portal/" in portal.json()["url"]


async def test_portal_before_any_checkout_is_a_conflict(
    client: AsyncTestClient[Any], make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    assert (await client.post("/api/billing/portal", headers=tenant.headers)).status_code == 409


async def test_checkout_while_stripe_is_down_is_503_and_retryable(
    client: AsyncTestClient[Any], make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    stripe_fake.outage(status=503)
    down = await client.post("/api/billing/checkout", json={}, headers=tenant.headers)
    assert down.status_code == 503
    stripe_fake.heal()
    assert (await client.post("/api/billing/checkout", json={}, headers=tenant.headers)).status_code == 200


async def test_billing_off_refuses_checkout_and_reports_texting_on(
    client: AsyncTestClient[Any], make_tenant: Any, settings_env: Any
) -> None:
    settings_env(BILLING_ENABLED="false")
    tenant = await make_tenant()
    assert (await client.post("/api/billing/checkout", json={}, headers=tenant.headers)).status_code == 409
    body = (await client.get("/api/billing", headers=tenant.headers)).json()
    assert body["texting_enabled"] is True and body["texting_reason"] == "billing_disabled"


# ---------------------------------------------------------------- webhooks
async def test_checkout_completed_subscribes_the_tenant_and_publishes_the_change(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    await dispatch_all(db)
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    row = await account(db, tenant.id)
    assert row["stripe_subscription_id"] == subscription_id
    assert row["subscription_status"] == "active" and row["price_id"] == PRICE
    assert row["texting_enabled"] and row["entitlement_reason"] == "active" and row["texting_enabled_until"] is None
    assert row["current_period_end"] > datetime.now(UTC) + timedelta(days=25)
    [changed] = await published(db, "billing.subscription_changed")
    assert changed["status"] == "active" and changed["subscription_id"] == subscription_id
    [entitlement] = await published(db, "billing.entitlement_changed")
    assert entitlement["texting_enabled"] is True and entitlement["previous_reason"] == "trialing"
    ledger = await db.fetch("SELECT external_id, tenant_id FROM webhook_events WHERE provider = 'stripe'")
    assert len(ledger) == 3 and all(r["tenant_id"] == UUID(tenant.id) for r in ledger)
    body = (await client.get("/api/billing", headers=tenant.headers)).json()
    assert body["plan"] == PRICE and body["subscription_status"] == "active"


async def test_a_bad_signature_is_400_counted_and_stores_nothing(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    await client.post("/api/billing/checkout", json={}, headers=tenant.headers)
    session_id = stripe_fake.checkout_sessions()[0]["id"]
    done = stripe_fake.complete_checkout(session_id)
    event = events_by_id(stripe_fake)[done["events"][0]]
    before = counter("webhook_signature_failures_total", provider="stripe")
    assert (await post_event(client, event, secret="whsec_someone_else")).status_code == 400
    assert (await post_event(client, event, age=600)).status_code == 400  # outside the 300 s tolerance
    unsigned = await client.post("/webhooks/stripe", content=json.dumps(event).encode())
    assert unsigned.status_code == 400
    assert counter("webhook_signature_failures_total", provider="stripe") == before + 3
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert (await account(db, tenant.id))["stripe_subscription_id"] is None


async def test_two_secrets_during_a_rotation(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe, settings_env: Any
) -> None:
    settings_env(STRIPE_WEBHOOK_SECRET=f"{WEBHOOK_SECRET}, {OLD_SECRET}")
    tenant = await make_tenant()
    await client.post("/api/billing/checkout", json={}, headers=tenant.headers)
    done = stripe_fake.complete_checkout(stripe_fake.checkout_sessions()[0]["id"])
    events = events_by_id(stripe_fake)
    assert (await post_event(client, events[done["events"][0]], secret=OLD_SECRET)).status_code == 200
    assert (await post_event(client, events[done["events"][1]], secret=WEBHOOK_SECRET)).status_code == 200
    assert (await account(db, tenant.id))["subscription_status"] == "trialing"


async def test_a_redelivered_event_is_applied_once(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    subscription_id = await subscribed(client, db, stripe_fake, tenant)
    before = counter("webhook_dedupe_hits_total", provider="stripe")
    result = stripe_fake.set_subscription_status(subscription_id, "past_due", invoice="failed")
    events = events_by_id(stripe_fake)
    for _ in range(2):
        for event_id in result["events"]:
            assert (await post_event(client, events[event_id])).status_code == 200
    assert counter("webhook_dedupe_hits_total", provider="stripe") == before + 2
    assert len(await published(db, "billing.payment_failed")) == 1
    row = await account(db, tenant.id)
    assert row["subscription_status"] == "past_due" and row["texting_enabled"]
    assert row["entitlement_reason"] == "past_due_grace"
    assert abs(row["texting_enabled_until"] - (row["past_due_since"] + timedelta(days=7))) < timedelta(seconds=1)


async def test_events_out_of_order_leave_stripes_current_state(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    failed = stripe_fake.set_subscription_status(subscription_id, "past_due", invoice="failed")
    paid = stripe_fake.set_subscription_status(subscription_id, "active", invoice="paid")
    events = events_by_id(stripe_fake)
    for event_id in reversed(failed["events"] + paid["events"]):  # newest first
        assert (await post_event(client, events[event_id])).status_code == 200
    row = await account(db, tenant.id)
    assert row["subscription_status"] == "active" and row["entitlement_reason"] == "active"
    assert row["past_due_since"] is None
    # the old failure is not news any more: no payment-failed notice
    assert await published(db, "billing.payment_failed") == []


async def test_with_stripe_down_an_older_event_never_overwrites_a_newer_one(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    stripe_fake.configure(clock_offset=10)
    canceled = stripe_fake.set_subscription_status(subscription_id, "canceled")
    stripe_fake.configure(clock_offset=0)
    old = stripe_fake.set_subscription_status(subscription_id, "past_due")  # created 10 s "before" the cancel
    events = events_by_id(stripe_fake)
    stripe_fake.outage(status=503)
    # the newer event applies its own copy (Stripe cannot be asked); the older one is ignored
    assert (await post_event(client, events[canceled["events"][0]])).status_code == 200
    assert (await post_event(client, events[old["events"][0]])).status_code == 200
    row = await account(db, tenant.id)
    assert row["subscription_status"] == "canceled" and not row["texting_enabled"]
    # an invoice event needs Stripe's word: 503, not stored, so Stripe delivers it again
    stripe_fake.heal()
    failed = stripe_fake.set_subscription_status(subscription_id, "canceled", invoice="failed")
    stripe_fake.outage(status=503)
    invoice_event = events_by_id(stripe_fake)[failed["events"][1]]
    assert invoice_event["type"] == "invoice.payment_failed"
    assert (await post_event(client, invoice_event)).status_code == 503
    assert (
        await db.fetchval("SELECT count(*) FROM webhook_events WHERE external_id = $1", f"event:{invoice_event['id']}")
        == 0
    )


async def test_legacy_shapes_are_read_too(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    """Period on the subscription and `invoice.subscription` (API versions before 2025-03-31)."""
    stripe_fake.configure(legacy_shapes=True)
    tenant = await make_tenant()
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    failed = stripe_fake.set_subscription_status(subscription_id, "past_due", invoice="failed")
    invoice_event = events_by_id(stripe_fake)[failed["events"][1]]
    assert "subscription" in invoice_event["data"]["object"] and "parent" not in invoice_event["data"]["object"]
    assert (await post_event(client, invoice_event)).status_code == 200
    row = await account(db, tenant.id)
    assert row["subscription_status"] == "past_due" and row["current_period_end"] is not None
    assert len(await published(db, "billing.payment_failed")) == 1


async def test_an_event_for_a_customer_we_do_not_know_is_answered_and_not_stored(
    client: AsyncTestClient[Any], db: asyncpg.Connection, stripe_fake: FakeStripe
) -> None:
    event = {
        "id": "evt_unknown",
        "object": "event",
        "type": "customer.subscription.updated",
        "created": int(datetime.now(UTC).timestamp()),
        "data": {"object": {"id": "sub_x", "object": "subscription", "customer": "cus_nobody", "status": "active"}},
    }
    assert (await post_event(client, event)).status_code == 200
    event_ignored = {**event, "id": "evt_other", "type": "charge.refunded"}
    assert (await post_event(client, event_ignored)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_grace_runs_out_and_the_change_is_recorded_once(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    failed = stripe_fake.set_subscription_status(subscription_id, "past_due", invoice="failed")
    for event_id in failed["events"]:
        await post_event(client, events_by_id(stripe_fake)[event_id])
    await db.execute("UPDATE billing_accounts SET texting_enabled_until = now() - interval '1 second'")
    body = (await client.get("/api/billing", headers=tenant.headers)).json()
    assert body["texting_enabled"] is False and body["texting_reason"] == "past_due_grace_over"
    assert (await billing_tick())["entitlements_lapsed"] == 1
    assert (await billing_tick())["entitlements_lapsed"] == 0
    row = await account(db, tenant.id)
    assert not row["texting_enabled"] and row["entitlement_reason"] == "past_due_grace_over"
    off = [e for e in await published(db, "billing.entitlement_changed") if not e["texting_enabled"]]
    assert len(off) == 1 and off[0]["previous_reason"] == "past_due_grace"
    # paid again: on at once
    paid = stripe_fake.set_subscription_status(subscription_id, "active", invoice="paid")
    for event_id in paid["events"]:
        await post_event(client, events_by_id(stripe_fake)[event_id])
    assert (await account(db, tenant.id))["texting_enabled"]


async def test_our_trial_ends_without_a_subscription(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    await dispatch_all(db)
    await db.execute("UPDATE billing_accounts SET texting_enabled_until = now() - interval '1 second'")
    assert (await billing_tick())["entitlements_lapsed"] == 1
    row = await account(db, tenant.id)
    assert not row["texting_enabled"] and row["entitlement_reason"] == "trial_ended"


# ---------------------------------------------------------------- reconcile
async def test_reconcile_applies_what_was_missed_and_changes_nothing_the_second_time(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    await client.post("/api/billing/checkout", json={}, headers=tenant.headers)
    done = stripe_fake.complete_checkout(stripe_fake.checkout_sessions()[0]["id"], trial_days=0, status="active")
    await post_event(client, events_by_id(stripe_fake)[done["events"][0]])  # only the first got through
    stripe_fake.set_subscription_status(done["subscription"], "past_due", invoice="failed")  # never delivered

    report = await reconcile(datetime.now(UTC) - timedelta(days=1))
    assert report.errors == []
    assert report.events_listed == 5 and report.events_applied == 4
    row = await account(db, tenant.id)
    assert row["subscription_status"] == "past_due" and row["entitlement_reason"] == "past_due_grace"
    assert len(await published(db, "billing.payment_failed")) == 1
    snapshot = await db.fetch("SELECT * FROM billing_accounts ORDER BY tenant_id")
    outbox = await db.fetchval("SELECT count(*) FROM outbox_events")
    ledger = await db.fetchval("SELECT count(*) FROM webhook_events")

    again = await reconcile(datetime.now(UTC) - timedelta(days=1))
    assert again.events_applied == 0 and again.customers_changed == 0 and again.errors == []
    assert await db.fetch("SELECT * FROM billing_accounts ORDER BY tenant_id") == snapshot
    assert await db.fetchval("SELECT count(*) FROM outbox_events") == outbox
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == ledger


async def test_reconcile_fetches_a_customers_subscription_with_no_events_left(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    stripe_fake.set_subscription_status(subscription_id, "canceled")  # never delivered
    report = await reconcile(datetime.now(UTC) + timedelta(days=1))  # no events that recent
    assert report.events_listed == 0 and report.customers_changed == 1
    row = await account(db, tenant.id)
    assert row["subscription_status"] == "canceled" and row["entitlement_reason"] == "canceled"


# ---------------------------------------------------------------- usage metering
async def test_usage_is_reported_once_each_across_a_stripe_outage(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    tenant = await make_tenant()
    await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    trial_only = await make_tenant(name="No card yet")
    await dispatch_all(db)
    messages = [uuid4() for _ in range(30)]
    for index, message_id in enumerate(messages):
        await record_usage(db, message_id, UUID(tenant.id), 1 + index % 3)
    await record_usage(db, uuid4(), UUID(trial_only.id), 2)

    # from the 11th request on, events are created but the answers lost (past the SDK's 2 retries),
    # then Stripe is down
    stripe_fake.outage(status=500, paths=["/v1/billing/meter_events"], after=10, count=30, drop_after_create=True)
    first = await report_usage(batch=8)
    assert first.error is not None and first.reported < 30
    stripe_fake.outage(status=503, paths=["/v1/billing/meter_events"])
    down = await report_usage()
    assert down.reported == 0 and down.error is not None
    stripe_fake.heal()
    rest = await report_usage()
    assert rest.error is None
    assert first.reported + rest.reported + rest.duplicates == 30 and rest.duplicates >= 1

    accepted = stripe_fake.meter_events()
    assert sorted(e["identifier"] for e in accepted) == sorted(str(m) for m in messages)
    assert sum(int(e["payload"]["value"]) for e in accepted) == sum(1 + i % 3 for i in range(30))
    assert {e["payload"]["stripe_customer_id"] for e in accepted} == {
        (await account(db, tenant.id))["stripe_customer_id"]
    }
    assert await db.fetchval("SELECT count(*) FROM billing_usage WHERE reported_at IS NULL") == 0
    assert await db.fetchval("SELECT report_outcome FROM billing_usage WHERE tenant_id = $1", UUID(trial_only.id)) == (
        "no_customer"
    )
    assert (await report_usage()).reported == 0  # nothing left, nothing sent again

    body = (await client.get("/api/billing", headers=tenant.headers)).json()
    assert body["usage"] == {
        "period_start": body["usage"]["period_start"],
        "texts": 30,
        "segments": sum(1 + i % 3 for i in range(30)),
    }


async def test_stripe_answering_duplicates_with_the_first_event_counts_as_reported(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, stripe_fake: FakeStripe
) -> None:
    stripe_fake.configure(meter_duplicates="accept")
    tenant = await make_tenant()
    await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    message_id = uuid4()
    await record_usage(db, message_id, UUID(tenant.id), 2)
    stripe_fake.outage(status=500, paths=["/v1/billing/meter_events"], count=3, drop_after_create=True)
    assert (await report_usage()).failed == 1  # created at Stripe, every answer lost
    stripe_fake.heal()
    report = await report_usage()  # sent again: Stripe answers with the first event
    assert report.reported == 1 and report.failed == 0
    assert [e["identifier"] for e in stripe_fake.meter_events()] == [str(message_id)]
    assert len(stripe_fake.meter_attempts()) == 2  # the SDK's retries replayed the first (idempotency key)


# ---------------------------------------------------------------- the entitlement gates texting
async def texting_off(db: asyncpg.Connection, tenant_id: str, reason: str = "canceled") -> None:
    await db.execute(
        "UPDATE billing_accounts SET texting_enabled = false, texting_enabled_until = NULL, entitlement_reason = $2 "
        "WHERE tenant_id = $1",
        UUID(tenant_id),
        reason,
    )


async def test_texting_off_suppresses_the_first_sms_and_tells_the_owner_once(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    stripe_fake: FakeStripe,
    fake_twilio: Any,
) -> None:
    tenant = await make_tenant(name="Joe's Plumbing")
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    canceled = stripe_fake.set_subscription_status(subscription_id, "canceled")
    for _ in range(2):  # delivered twice: one change, one notice
        await post_event(client, events_by_id(stripe_fake)[canceled["events"][0]])
    await dispatch_all(db)
    [notice] = fake_twilio.messages()
    assert notice["form"]["To"] == tenant.forward_to and notice["form"]["From"] == tenant.number
    assert "texting is off because your NeverMissCall subscription was canceled" in notice["form"]["Body"]

    _, response = await missed_call(client, tenant.number, CALLER)
    assert response.status_code == 200  # the call is still answered and recorded
    await text_in(client, tenant.number, "Are you open?")  # inbound texts still land in the inbox
    await dispatch_all(db)
    assert len(fake_twilio.messages()) == 1  # no first SMS, no owner alert
    first = await db.fetchrow("SELECT status, suppressed_reason FROM conv_messages WHERE kind = 'first_sms'")
    assert (first["status"], first["suppressed_reason"]) == ("suppressed", "not_entitled")
    assert await db.fetchval("SELECT count(*) FROM conv_calls WHERE status = 'missed'") == 1
    assert await db.fetchval("SELECT count(*) FROM conv_messages WHERE direction = 'inbound'") == 1
    threads = (await client.get("/api/threads", headers=tenant.headers)).json()
    assert len(threads["items"]) == 2  # the caller's and the owner's (with the notice)

    # paid again (a new subscription): on at once, no restart, the next caller is texted back
    await db.execute("UPDATE billing_accounts SET checkout_created_at = NULL")
    await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    await missed_call(client, tenant.number, "+15550001111")
    await dispatch_all(db)
    assert [m["form"]["To"] for m in fake_twilio.messages()] == [tenant.forward_to, "+15550001111"]


async def test_a_failed_payment_tells_the_owner_once_per_invoice(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    stripe_fake: FakeStripe,
    fake_twilio: Any,
) -> None:
    tenant = await make_tenant(name="Ace HVAC")
    subscription_id = await subscribed(client, db, stripe_fake, tenant, trial_days=0, status="active")
    failed = stripe_fake.set_subscription_status(subscription_id, "past_due", invoice="failed")
    events = events_by_id(stripe_fake)
    invoice_event = events[failed["events"][1]]
    for event_id in failed["events"]:
        await post_event(client, events[event_id])
    retried = {**invoice_event, "id": "evt_retry_attempt_2"}  # Stripe's next attempt fails too
    retried["data"] = {"object": {**invoice_event["data"]["object"], "attempt_count": 2}}
    await post_event(client, retried)
    await dispatch_all(db)
    [notice] = fake_twilio.messages()
    assert "your NeverMissCall payment of $29.00 failed" in notice["form"]["Body"]
    assert "Texting continues for now" in notice["form"]["Body"]
    # within the grace period the callers are still texted back
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    assert [m["form"]["To"] for m in fake_twilio.messages()] == [tenant.forward_to, CALLER]


async def test_texts_waiting_when_texting_turns_off_are_suppressed_not_sent_later(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    stripe_fake: FakeStripe,
    fake_twilio: Any,
) -> None:
    tenant = await make_tenant(timezone=zone_at_local_hour(23))  # quiet hours: the first SMS waits
    await dispatch_all(db)
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    assert await db.fetchval("SELECT status FROM conv_messages WHERE kind = 'first_sms'") == "scheduled"
    await texting_off(db, tenant.id, "trial_ended")
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")
    await dispatch_all(db)
    first = await db.fetchrow("SELECT status, suppressed_reason FROM conv_messages WHERE kind = 'first_sms'")
    assert (first["status"], first["suppressed_reason"]) == ("suppressed", "not_entitled")
    assert fake_twilio.messages() == []


async def test_billing_disabled_never_gates_texting(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, settings_env: Any
) -> None:
    settings_env(BILLING_ENABLED="false")
    tenant = await make_tenant()
    await record_usage(db, uuid4(), UUID(tenant.id), 1)  # a row exists from when billing was on
    await db.execute(
        "INSERT INTO billing_accounts (tenant_id, subscription_status, texting_enabled, entitlement_reason) "
        "VALUES ($1, 'canceled', false, 'canceled') ON CONFLICT (tenant_id) DO UPDATE SET texting_enabled = false",
        UUID(tenant.id),
    )
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    assert len(fake_twilio.messages()) == 1


async def test_every_accepted_text_records_its_segments_for_the_meter(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    stripe_fake: FakeStripe,
    fake_twilio: Any,
) -> None:
    tenant = await make_tenant()
    await dispatch_all(db)
    await missed_call(client, tenant.number, CALLER)
    await dispatch_all(db)
    thread_id = await db.fetchval("SELECT thread_id FROM conv_messages WHERE kind = 'first_sms'")
    reply = await client.post(
        f"/api/threads/{thread_id}/messages", json={"body": "Hi! 🙂 " + "x" * 70}, headers=tenant.headers
    )
    assert reply.status_code == 202, reply.text
    await dispatch_all(db)
    rows = await db.fetch(
        "SELECT m.kind, m.body, u.segments, u.tenant_id FROM billing_usage u "
        "JOIN conv_messages m ON m.id = u.message_id"
    )
    assert sorted(r["kind"] for r in rows) == ["first_sms", "reply"]
    assert all(r["tenant_id"] == UUID(tenant.id) for r in rows)
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["reply"]["segments"] == 2  # UCS-2: 79 units
    assert by_kind["first_sms"]["segments"] == count_segments(by_kind["first_sms"]["body"])
    body = (await client.get("/api/billing", headers=tenant.headers)).json()
    assert body["usage"]["texts"] == 2 and body["usage"]["segments"] == 2 + by_kind["first_sms"]["segments"]

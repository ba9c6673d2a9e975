"""Billing with the real web, worker and jobs processes, the fake Stripe API (signed webhooks pushed to
the web) and the fake Twilio API: checkout turns texting on; a failed payment tells the owner once and
keeps texting on through the grace period, then off (first SMS suppressed with `not_entitled`, the
owner told once) until paid again, with no restart; events delivered twice and out of order leave
Stripe's state; a bad signature is a 400 that stores nothing; 100 texts are metered exactly once each
across a Stripe outage."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from nmc.billing import count_segments
from tests.e2e.conftest import stack_env, wait_for
from tests.e2e.test_conversation_e2e import Shop, make_shop, texts_to, wait_for_texts
from tests.fakes.clerk import FakeClerk
from tests.fakes.stripe_api import FakeStripe
from tests.processes import Process, Stack

pytestmark = pytest.mark.e2e
WEBHOOK_SECRET = "whsec_e2e"
PRICE = "price_e2e_plan"
TEXTS_PRICE = "price_e2e_texts"
_callers = itertools.count(1)


def new_caller() -> str:
    return f"+1555310{next(_callers):04d}"


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(
    migrated_database: str, fake_twilio_server: Any, stripe_api: FakeStripe, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    env = stack_env(fake_twilio_server.base_url, **stripe_api.billing_settings(WEBHOOK_SECRET, PRICE, TEXTS_PRICE))
    log_dir = tmp_path_factory.mktemp("e2e-billing-logs")
    running = Stack(env, log_dir)
    jobs = Process("jobs", env, log_dir)
    running.jobs = jobs  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        jobs.stop()
        running.stop()


@pytest.fixture
def stripe(stripe_api: FakeStripe, stack: Stack) -> FakeStripe:
    stripe_api.reset()
    stripe_api.configure(webhook_url=f"{stack.base_url}/webhooks/stripe", webhook_secret=WEBHOOK_SECRET)
    return stripe_api


def run_billing_tick() -> None:
    """What the worker's cron does every minute: the jobs process runs billing's tick."""
    from jobs import billing_tick

    billing_tick.send()


async def account(db: asyncpg.Connection, shop: Shop) -> asyncpg.Record:
    async def found() -> asyncpg.Record | None:
        return await db.fetchrow(
            "SELECT b.* FROM billing_accounts b JOIN tenant_phone_numbers n ON n.tenant_id = b.tenant_id "
            "WHERE n.twilio_number = $1",
            shop.number,
        )

    return await wait_for(found)


async def until_account(db: asyncpg.Connection, shop: Shop, **expected: Any) -> asyncpg.Record:
    async def matches() -> asyncpg.Record | None:
        row = await account(db, shop)
        return row if all(row[k] == v for k, v in expected.items()) else None

    return await wait_for(matches, timeout=15)


async def subscribe(shop: Shop, stripe: FakeStripe, **complete: Any) -> str:
    response = shop.api("POST", "/billing/checkout", json={})
    assert response.status_code == 200, response.text
    session_id = response.json()["url"].rsplit("/", 1)[1]
    done = stripe.complete_checkout(session_id, **complete)
    assert all(d["status"] == 200 for d in done["deliveries"]), done
    return str(done["subscription"])


async def first_sms_of(db: asyncpg.Connection, caller: str) -> asyncpg.Record:
    async def decided() -> asyncpg.Record | None:
        return await db.fetchrow(
            "SELECT * FROM conv_messages WHERE kind = 'first_sms' AND to_number = $1 AND status <> 'sending'", caller
        )

    return await wait_for(decided, timeout=10)


async def test_checkout_payment_failed_grace_off_and_paid_again(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, stripe: FakeStripe, clerk: FakeClerk
) -> None:
    shop = await make_shop(stack, clerk)
    trial = await account(db, shop)  # tenant.created -> the worker started the trial
    assert trial["subscription_status"] == "trialing" and trial["texting_enabled"]

    subscription_id = await subscribe(shop, stripe, trial_days=0)
    await until_account(db, shop, subscription_status="active", entitlement_reason="active")
    assert shop.api("GET", "/billing").json()["plan"] == PRICE

    # a payment fails: the owner is told once, texting stays on through the grace period
    failed = stripe.set_subscription_status(subscription_id, "past_due", invoice="failed")
    assert [d["status"] for d in failed["deliveries"]] == [200, 200]
    stripe.deliver(failed["events"])  # Stripe retries: nothing new
    [notice] = await wait_for_texts(fake_twilio, shop.forward_to, 1)
    assert "payment of $29.00 failed" in notice["form"]["Body"]
    caller = new_caller()
    shop.missed_call(caller)
    await wait_for_texts(fake_twilio, caller, 1)
    row = await until_account(db, shop, entitlement_reason="past_due_grace")
    assert row["texting_enabled"]

    # the grace period runs out (moved into the past here): the jobs process records it, the owner is told
    await db.execute("UPDATE billing_accounts SET texting_enabled_until = now() - interval '1 second'")
    run_billing_tick()
    await until_account(db, shop, texting_enabled=False, entitlement_reason="past_due_grace_over")
    off = await wait_for_texts(fake_twilio, shop.forward_to, 2)
    assert "texting is off because your NeverMissCall payment is overdue" in off[1]["form"]["Body"]
    run_billing_tick()  # nothing more to record, nothing more said

    unlucky = new_caller()
    assert shop.missed_call(unlucky).status_code == 200
    message = await first_sms_of(db, unlucky)
    assert (message["status"], message["suppressed_reason"]) == ("suppressed", "not_entitled")
    assert texts_to(fake_twilio, unlucky) == []
    body = shop.api("GET", "/billing").json()
    assert body["texting_enabled"] is False and body["texting_reason"] == "past_due_grace_over"

    # paid again: on at once, no restart
    paid = stripe.set_subscription_status(subscription_id, "active", invoice="paid")
    assert all(d["status"] == 200 for d in paid["deliveries"])
    await until_account(db, shop, texting_enabled=True, entitlement_reason="active")
    lucky = new_caller()
    shop.missed_call(lucky)
    await wait_for_texts(fake_twilio, lucky, 1)
    assert len(texts_to(fake_twilio, shop.forward_to)) == 2  # told once each time


async def test_events_twice_and_out_of_order_leave_stripes_state(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, stripe: FakeStripe, clerk: FakeClerk
) -> None:
    stripe.configure(delivery="hold")
    shop = await make_shop(stack, clerk)
    await account(db, shop)
    response = shop.api("POST", "/billing/checkout", json={})
    done = stripe.complete_checkout(response.json()["url"].rsplit("/", 1)[1], trial_days=0)
    subscription_id = done["subscription"]
    stripe.set_subscription_status(subscription_id, "past_due", invoice="failed")
    stripe.set_subscription_status(subscription_id, "active", invoice="paid")
    stripe.set_subscription_status(subscription_id, "active", cancel_at_period_end=True)
    held = stripe.held()
    outcomes = stripe.deliver(held, order="reverse", times=2)
    assert {o["status"] for o in outcomes} == {200}
    row = await until_account(db, shop, subscription_status="active", cancel_at_period_end=True)
    assert row["texting_enabled"] and row["entitlement_reason"] == "active" and row["past_due_since"] is None
    ledger = await db.fetchval("SELECT count(*) FROM webhook_events WHERE provider = 'stripe'")
    assert ledger == len(held)  # each event once, whatever was delivered twice
    assert texts_to(fake_twilio, shop.forward_to) == []  # the failure was over before we heard of it


async def test_a_bad_signature_is_400_and_stores_nothing(
    stack: Stack, db: asyncpg.Connection, stripe: FakeStripe, clerk: FakeClerk
) -> None:
    stripe.configure(delivery="hold")
    shop = await make_shop(stack, clerk)
    await account(db, shop)
    response = shop.api("POST", "/billing/checkout", json={})
    done = stripe.complete_checkout(response.json()["url"].rsplit("/", 1)[1])
    for signature in ("bad", "stale", "missing"):
        assert {o["status"] for o in stripe.deliver(done["events"], signature=signature)} == {400}
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE provider = 'stripe'") == 0
    assert (await account(db, shop))["stripe_subscription_id"] is None
    warnings = [line for line in stack.web.output().splitlines() if "webhook.signature_failed" in line]
    assert len(warnings) >= 3 and all("stripe" in line and "whsec" not in line for line in warnings)
    metrics = httpx.get(f"{stack.base_url}/metrics", timeout=5).text
    assert 'webhook_signature_failures_total{provider="stripe"}' in metrics


async def test_a_hundred_texts_are_metered_once_each_across_a_stripe_outage(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, stripe: FakeStripe, clerk: FakeClerk
) -> None:
    shop = await make_shop(stack, clerk)
    await account(db, shop)
    await subscribe(shop, stripe, trial_days=0)
    await until_account(db, shop, subscription_status="active")
    callers = [new_caller() for _ in range(100)]
    for caller in callers:
        assert shop.missed_call(caller).status_code == 200

    async def all_accepted() -> list[asyncpg.Record] | None:
        rows = await db.fetch(
            "SELECT id, body FROM conv_messages WHERE kind = 'first_sms' AND twilio_sid IS NOT NULL "
            "AND to_number = ANY($1::text[])",
            callers,
        )
        return rows if len(rows) == 100 else None

    sent = await wait_for(all_accepted, timeout=60)
    expected = {str(row["id"]): count_segments(row["body"]) for row in sent}
    owner_texts = await db.fetch(
        "SELECT m.id, m.body FROM conv_messages m JOIN billing_usage u ON u.message_id = m.id "
        "WHERE m.kind <> 'first_sms'"
    )
    expected.update({str(row["id"]): count_segments(row["body"]) for row in owner_texts})

    # Stripe takes 40 meter events, then loses the answers to what it creates, then is down
    stripe.outage(status=500, paths=["/v1/billing/meter_events"], after=40, count=24, drop_after_create=True)
    run_billing_tick()

    async def run_interrupted() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM billing_usage WHERE last_error IS NOT NULL"))

    await wait_for(run_interrupted, timeout=30)
    assert 40 <= len(stripe.meter_events()) < len(expected)
    stripe.outage(status=503, paths=["/v1/billing/meter_events"])
    run_billing_tick()
    stripe.heal()

    async def all_reported() -> bool:
        pending = await db.fetchval("SELECT count(*) FROM billing_usage WHERE reported_at IS NULL")
        if pending:
            run_billing_tick()
        return pending == 0

    await wait_for(all_reported, timeout=60)
    accepted = stripe.meter_events()
    identifiers = [event["identifier"] for event in accepted]
    assert len(identifiers) == len(set(identifiers)) == len(expected)
    assert {event["identifier"]: int(event["payload"]["value"]) for event in accepted} == expected
    rows = await db.fetch("SELECT report_outcome, count(*) AS n FROM billing_usage GROUP BY report_outcome")
    outcomes = {row["report_outcome"]: row["n"] for row in rows}
    assert outcomes.get("duplicate", 0) >= 1 and sum(outcomes.values()) == len(expected)
    body = shop.api("GET", "/billing").json()
    assert body["usage"]["texts"] == len(expected) and body["usage"]["segments"] == sum(expected.values())

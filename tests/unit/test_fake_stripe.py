"""The fake Stripe API speaks what the stripe SDK speaks: its requests, its errors, its signatures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.fakes.stripe_api import FakeStripe, parse_form, sign


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


def client(fake: FakeStripe, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(
        fake.api_key,
        base_addresses={"api": fake.base_url, "meter_events": fake.base_url},
        http_client=stripe.HTTPXClient(),
        max_network_retries=retries,
    )


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_bracket_notation_becomes_nested_objects_and_lists() -> None:
    form = b"line_items[0][price]=p1&line_items[0][quantity]=1&line_items[1][price]=p2&metadata[tenant_id]=t&mode=x"
    assert parse_form(form) == {
        "line_items": [{"price": "p1", "quantity": "1"}, {"price": "p2"}],
        "metadata": {"tenant_id": "t"},
        "mode": "x",
    }


def test_signatures_verify_with_the_sdk() -> None:
    body = json.dumps({"id": "evt_1"}).encode()
    header = sign(body, "whsec_x", 1_800_000_000)
    assert stripe.WebhookSignature.verify_header(body.decode(), header, "whsec_x", tolerance=None)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(body.decode(), header, "whsec_y", tolerance=None)


def test_an_idempotency_key_replays_the_first_answer(fake: FakeStripe) -> None:
    fake.reset()

    async def scenario() -> tuple[str, str]:
        api = client(fake)
        first = await api.v1.customers.create_async(params={"name": "A"}, options={"idempotency_key": "same"})
        second = await api.v1.customers.create_async(params={"name": "A"}, options={"idempotency_key": "same"})
        with pytest.raises(stripe.IdempotencyError):
            await api.v1.customers.create_async(params={"name": "B"}, options={"idempotency_key": "same"})
        return first.id, second.id

    first, second = run(scenario())
    assert first == second
    assert [r.get("replayed", False) for r in fake.requests()] == [False, True, False]


def test_errors_and_injected_faults_reach_the_sdk_as_stripe_errors(fake: FakeStripe) -> None:
    fake.reset()

    async def scenario() -> None:
        with pytest.raises(stripe.InvalidRequestError) as missing:
            await client(fake).v1.subscriptions.retrieve_async("sub_nope")
        assert missing.value.http_status == 404 and missing.value.code == "resource_missing"
        with pytest.raises(stripe.AuthenticationError):
            await stripe.StripeClient("sk_wrong", base_addresses={"api": fake.base_url}).v1.customers.create_async()
        fake.outage(status=429, count=1)
        with pytest.raises(stripe.RateLimitError):
            await client(fake).v1.customers.create_async()
        fake.outage(status=503, count=1)
        await client(fake, retries=2).v1.customers.create_async()  # the SDK's retry gets through
        fake.heal()

    run(scenario())


def test_meter_events_are_deduplicated_by_identifier(fake: FakeStripe) -> None:
    fake.reset()

    async def scenario() -> None:
        api = client(fake)
        customer = await api.v1.customers.create_async()
        params: Any = {
            "event_name": "texts",
            "payload": {"stripe_customer_id": customer.id, "value": "3"},
            "identifier": "m1",
        }
        await api.v1.billing.meter_events.create_async(params=params)
        with pytest.raises(stripe.InvalidRequestError) as duplicate:
            await api.v1.billing.meter_events.create_async(params=params)
        assert duplicate.value.code == "resource_already_exists"
        fake.configure(meter_duplicates="accept")
        again = await api.v1.billing.meter_events.create_async(params=params)
        assert again.identifier == "m1"

    run(scenario())
    assert [event["payload"]["value"] for event in fake.meter_events()] == ["3"]


def test_events_are_listed_newest_first_with_paging_and_filters(fake: FakeStripe) -> None:
    fake.reset()

    async def scenario() -> list[str]:
        api = client(fake)
        customer = await api.v1.customers.create_async()
        session = await api.v1.checkout.sessions.create_async(
            params={
                "mode": "subscription",
                "customer": customer.id,
                "line_items": [{"price": "price_a", "quantity": 1}],
                "success_url": "https://x.test/ok",
                "cancel_url": "https://x.test/no",
            }
        )
        fake.complete_checkout(session.id, trial_days=0)
        seen: list[str] = []
        page = await api.v1.events.list_async(
            params={"limit": 2, "types": ["checkout.session.completed", "invoice.paid"]}
        )
        seen += [event.type for event in page.data]
        assert page.has_more is False
        page = await api.v1.events.list_async(params={"limit": 1})
        assert page.has_more is True
        rest = await api.v1.events.list_async(params={"limit": 5, "starting_after": page.data[0].id})
        return seen + [page.data[0].type] + [event.type for event in rest.data]

    assert run(scenario()) == [
        "invoice.paid",
        "checkout.session.completed",
        "invoice.paid",
        "customer.subscription.created",
        "checkout.session.completed",
    ]

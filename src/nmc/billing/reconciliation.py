"""`just billing-reconcile [--since T]`: what Stripe knows, applied where we missed it (runbook §7.5 step 2,
without the dashboard).

1. Stripe's events of the kinds billing handles since T (Stripe keeps 30 days; the default), oldest
   first, each through the same handler as `POST /webhooks/stripe` unless the `webhook_events` ledger
   has it already (`nmc.webhooks.ingest_fetched`): recorded and applied as if delivered now.
2. Each Stripe customer's current subscription, fetched and applied (a change missed by more than
   the events' 30 days, or never sent).

Running it twice changes nothing the second time: the ledger has every event, and the fetched states
are those already stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
import structlog

from nmc.billing.entitlement import TERMINAL
from nmc.billing.service import HANDLED_EVENTS, adoptable, apply_subscription, lock_account, subscription_state
from nmc.billing.stripe_api import StripeUnavailable, as_dict, stripe_client
from nmc.billing.webhooks import STRIPE_EVENT
from nmc.db import raw_connection, session_scope
from nmc.observability.correlation import use_correlation_id
from nmc.webhooks import ingest_fetched

log = structlog.get_logger(module="billing")

EVENTS_KEPT = timedelta(days=30)  # how far back Stripe lists events
PAGE = 100

_CUSTOMERS = "SELECT tenant_id, stripe_customer_id FROM billing_accounts WHERE stripe_customer_id IS NOT NULL"


@dataclass
class ReconcileReport:
    events_listed: int = 0
    events_applied: int = 0  # not in the ledger before: recorded and applied now
    customers_checked: int = 0
    customers_changed: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"billing-reconcile: {self.events_listed} Stripe events listed, {self.events_applied} applied "
            f"(the rest were already in webhook_events); {self.customers_checked} customers checked, "
            f"{self.customers_changed} changed"
        )
        return text + "".join(f"\n  error: {error}" for error in self.errors)


async def list_events(client: stripe.StripeClient, since: datetime) -> list[dict[str, Any]]:
    """Every handled event created at or after `since`, oldest first."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {
        "created": {"gte": int(since.timestamp())},
        "limit": PAGE,
        "types": sorted(HANDLED_EVENTS),
    }
    while True:
        page = await client.v1.events.list_async(params=params)  # type: ignore[arg-type]
        batch = [as_dict(event) for event in page.data]
        events.extend(batch)
        if not page.has_more or not batch:
            break
        params["starting_after"] = batch[-1]["id"]  # the list is newest first
    events.sort(key=lambda event: (event.get("created", 0), event.get("id", "")))
    return events


def current_subscription(subscriptions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A customer's subscription that matters: the newest live one, else the newest."""
    live = [s for s in subscriptions if s.get("status") not in TERMINAL]
    chosen = sorted(live or subscriptions, key=lambda s: s.get("created", 0))
    return chosen[-1] if chosen else None


async def reconcile(since: datetime | None = None) -> ReconcileReport:
    use_correlation_id(f"billing-reconcile-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    client = stripe_client()
    report = ReconcileReport()
    since = since or datetime.now(UTC) - EVENTS_KEPT
    try:
        events = await list_events(client, since)
    except stripe.StripeError as exc:
        report.errors.append(f"listing events: {exc.user_message or exc}")
        return report
    report.events_listed = len(events)
    for event in events:
        try:
            async with session_scope() as session:
                if await ingest_fetched(session, STRIPE_EVENT, event):
                    report.events_applied += 1
        except (StripeUnavailable, stripe.StripeError) as exc:
            report.errors.append(f"event {event.get('id')}: {exc}")
    async with session_scope() as session:
        customers = await (await raw_connection(session)).fetch(_CUSTOMERS)
    for row in customers:
        report.customers_checked += 1
        try:
            listed = await client.v1.subscriptions.list_async(
                params={"customer": row["stripe_customer_id"], "status": "all", "limit": PAGE}
            )
        except stripe.StripeError as exc:
            report.errors.append(f"customer {row['stripe_customer_id']}: {exc.user_message or exc}")
            continue
        chosen = current_subscription([as_dict(subscription) for subscription in listed.data])
        if chosen is None:
            continue
        state = subscription_state(chosen)
        async with session_scope() as session:
            connection = await raw_connection(session)
            account = await lock_account(connection, row["tenant_id"])
            if adoptable(account, state):
                applied = await apply_subscription(connection, account, state, at=None)
                if applied.subscription_changed or applied.entitlement_changed:
                    report.customers_changed += 1
    log.info(
        "billing.reconciled",
        events_listed=report.events_listed,
        events_applied=report.events_applied,
        customers_checked=report.customers_checked,
        customers_changed=report.customers_changed,
        errors=len(report.errors),
    )
    return report

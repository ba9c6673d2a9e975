"""The Stripe SDK's async client, built from settings (`STRIPE_SECRET_KEY`, `STRIPE_API_BASE_URL`).

One client per event loop (the SDK's httpx client belongs to the loop that made it). Requests made
here are few and off the first-SMS path: checkout, portal, re-fetching a subscription a webhook
names, listing events for `just billing-reconcile`, and the jobs process's meter events. What the SDK
returns is turned into plain dicts (`as_dict`) so webhooks (JSON) and fetches read the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import stripe

from nmc.problems import Conflict, DomainError
from nmc.settings import Settings, get_settings

# The SDK retries connection errors, 409 and 5xx (and obeys `Stripe-Should-Retry`) only when asked;
# its POSTs carry an idempotency key, so a retried create is still one object.
NETWORK_RETRIES = 2
TIMEOUT_SECONDS = 20.0

_clients: dict[tuple[int, str, str], stripe.StripeClient] = {}


class BillingNotConfigured(Conflict):
    """Billing is off here, or Stripe is not configured: checkout, portal and reconcile cannot work
    (a 409: the deployment's state forbids it, nothing a retry would change)."""

    title = "Billing not configured"

    def __init__(self, detail: str = "Stripe is not configured here (STRIPE_SECRET_KEY is empty)") -> None:
        super().__init__(detail)


class StripeUnavailable(DomainError):
    """Stripe did not answer usefully (outage, rate limit, timeout): try again later."""

    status_code = 503
    title = "Stripe unavailable"


def stripe_client(settings: Settings | None = None) -> stripe.StripeClient:
    settings = settings or get_settings()
    if not settings.STRIPE_SECRET_KEY:
        raise BillingNotConfigured()
    key = (id(asyncio.get_running_loop()), settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE_URL)
    client = _clients.get(key)
    if client is None:
        # Only one loop's client is kept (a process has one loop; tests make more).
        _clients.clear()
        client = _clients[key] = stripe.StripeClient(
            settings.STRIPE_SECRET_KEY,
            base_addresses={"api": settings.STRIPE_API_BASE_URL, "meter_events": settings.STRIPE_API_BASE_URL},
            http_client=stripe.HTTPXClient(timeout=TIMEOUT_SECONDS),
            max_network_retries=NETWORK_RETRIES,
        )
    return client


def as_dict(value: Any) -> dict[str, Any]:
    """A Stripe object (or a webhook's JSON object) as plain nested dicts."""
    if isinstance(value, stripe.StripeObject):
        return value.to_dict()
    return dict(value)


def transient(exc: stripe.StripeError) -> bool:
    """Worth trying again later: no answer, a rate limit, or Stripe's own error."""
    return isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (exc.http_status or 0) >= 500

"""The owner's billing page: state and usage, a Checkout Session to subscribe, a Customer Portal session.

Checkout and portal hold the tenant's `billing_accounts` row lock while they talk to Stripe, so a
double click waits for the first click's session and gets it back (an open session is reused for
`CHECKOUT_REUSE`); the Stripe customer is created once (idempotency key per tenant) and kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import stripe
import structlog

from nmc.billing.entitlement import TERMINAL, EntitlementReason
from nmc.billing.schemas import BillingRead, UsageRead
from nmc.billing.service import Account, lock_account, read_account, start_trial, trial_length
from nmc.billing.stripe_api import BillingNotConfigured, StripeUnavailable, stripe_client, transient
from nmc.billing.usage import usage_since
from nmc.problems import Conflict, InvalidField
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="billing")

CHECKOUT_REUSE = timedelta(minutes=10)  # a second click within this gets the same Checkout Session
# Stripe Checkout wants a trial end at least 48 hours ahead; a shorter rest of our trial is not carried.
MIN_CARRIED_TRIAL = timedelta(hours=48)


def _period_start(account: Account, settings: Settings, now: datetime) -> datetime:
    if account.current_period_start is not None:
        return account.current_period_start
    if account.trial_end is not None:
        return account.trial_end - trial_length(settings)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def billing_state(connection: asyncpg.Connection, tenant_id: UUID) -> BillingRead:
    """`GET /api/billing` (a tenant without a row yet gets its trial now)."""
    settings = get_settings()
    now = datetime.now(UTC)
    account = await read_account(connection, tenant_id)
    if account is None:
        await start_trial(connection, tenant_id, now)
        account = await read_account(connection, tenant_id)
        assert account is not None
    entitlement = account.entitlement.effective(now)
    if not settings.BILLING_ENABLED:
        entitlement = type(entitlement)(True, EntitlementReason.BILLING_DISABLED)
    usage = await usage_since(connection, tenant_id, _period_start(account, settings, now))
    return BillingRead(
        billing_enabled=settings.BILLING_ENABLED,
        plan=account.price_id,
        subscription_status=account.subscription_status,
        subscription_id=account.stripe_subscription_id,
        current_period_end=account.current_period_end,
        trial_end=account.trial_end,
        cancel_at_period_end=account.cancel_at_period_end,
        texting_enabled=entitlement.enabled,
        texting_reason=entitlement.reason,
        texting_enabled_until=entitlement.until,
        texting_changed_at=account.entitlement_changed_at,
        usage=UsageRead(period_start=usage.since, texts=usage.texts, segments=usage.segments),
    )


def _require_billing(settings: Settings) -> None:
    if not settings.BILLING_ENABLED:
        raise BillingNotConfigured("Billing is off here (BILLING_ENABLED=false)")
    if not settings.STRIPE_SECRET_KEY:
        raise BillingNotConfigured()


def _allowed_prices(settings: Settings) -> list[str]:
    plans = [price.strip() for price in settings.STRIPE_PRICE_PLANS.split(",") if price.strip()]
    return [price for price in [settings.STRIPE_PRICE_BASE, *plans] if price]


def _unavailable(exc: stripe.StripeError, what: str) -> Exception:
    if transient(exc) or isinstance(exc, stripe.AuthenticationError):
        log.warning("billing.stripe_unavailable", what=what, error=str(exc))
        return StripeUnavailable(f"Stripe could not {what} now; try again shortly")
    log.error("billing.stripe_refused", what=what, error=str(exc), code=exc.code)
    return Conflict(f"Stripe refused to {what}: {exc.user_message or exc}")


_BUSINESS_NAME = "SELECT name FROM tenant_profiles WHERE id = $1"
_SET_CUSTOMER = "UPDATE billing_accounts SET stripe_customer_id = $2, updated_at = now() WHERE tenant_id = $1"
_SET_CHECKOUT = """
    UPDATE billing_accounts SET checkout_session_id = $2, checkout_url = $3, checkout_price_id = $4,
                                checkout_created_at = $5, updated_at = now()
    WHERE tenant_id = $1
"""


async def ensure_customer(connection: asyncpg.Connection, account: Account) -> str:
    """The tenant's Stripe customer, created once (the caller holds the row lock)."""
    if account.stripe_customer_id:
        return account.stripe_customer_id
    name = await connection.fetchval(_BUSINESS_NAME, account.tenant_id)
    tenant = str(account.tenant_id)
    try:
        customer = await stripe_client().v1.customers.create_async(
            params={"name": name or tenant, "metadata": {"tenant_id": tenant}},
            options={"idempotency_key": f"nmc-customer-{tenant}"},
        )
    except stripe.StripeError as exc:
        raise _unavailable(exc, "create the customer") from exc
    await connection.execute(_SET_CUSTOMER, account.tenant_id, customer.id)
    log.info("billing.customer_created", customer=customer.id)
    return str(customer.id)


async def start_checkout(connection: asyncpg.Connection, tenant_id: UUID, price: str | None) -> str:
    """`POST /api/billing/checkout`: the URL of a Checkout Session (subscription mode) for the tenant."""
    settings = get_settings()
    _require_billing(settings)
    allowed = _allowed_prices(settings)
    if not allowed:
        raise BillingNotConfigured("No plan price is configured (STRIPE_PRICE_BASE)")
    price = price or allowed[0]
    if price not in allowed:
        raise InvalidField("price", "not a plan this deployment offers")
    account = await lock_account(connection, tenant_id)
    if account.stripe_subscription_id and account.subscription_status not in TERMINAL:
        raise Conflict("The tenant has a subscription already: manage it in the customer portal")
    now = datetime.now(UTC)
    if (
        account.checkout_url
        and account.checkout_price_id == price
        and account.checkout_created_at is not None
        and now - account.checkout_created_at < CHECKOUT_REUSE
    ):
        return account.checkout_url
    customer = await ensure_customer(connection, account)
    tenant = str(tenant_id)
    line_items: list[dict[str, object]] = [{"price": price, "quantity": 1}]
    if settings.STRIPE_PRICE_TEXTS:
        line_items.append({"price": settings.STRIPE_PRICE_TEXTS})  # metered: no quantity
    subscription_data: dict[str, object] = {"metadata": {"tenant_id": tenant}}
    if account.stripe_subscription_id is None and account.trial_end and account.trial_end - now >= MIN_CARRIED_TRIAL:
        subscription_data["trial_end"] = int(account.trial_end.timestamp())  # the rest of our trial carries over
    # One key per tenant, price, session it replaces and 10-minute window: a retried or doubled request
    # makes one session (the row lock already serialises clicks; this covers the SDK's own retries).
    window = int(now.timestamp() // CHECKOUT_REUSE.total_seconds())
    replaces = account.checkout_session_id or "none"
    try:
        session = await stripe_client().v1.checkout.sessions.create_async(
            params={  # type: ignore[arg-type]
                "mode": "subscription",
                "customer": customer,
                "client_reference_id": tenant,
                "metadata": {"tenant_id": tenant},
                "line_items": line_items,
                "subscription_data": subscription_data,
                "success_url": settings.BILLING_SUCCESS_URL or settings.PUBLIC_BASE_URL,
                "cancel_url": settings.BILLING_CANCEL_URL or settings.PUBLIC_BASE_URL,
            },
            options={"idempotency_key": f"nmc-checkout-{tenant}-{price}-{replaces}-{window}"},
        )
    except stripe.StripeError as exc:
        raise _unavailable(exc, "start a checkout") from exc
    if not session.url:
        raise Conflict("Stripe answered a Checkout Session without a URL")
    await connection.execute(_SET_CHECKOUT, tenant_id, session.id, session.url, price, now)
    log.info("billing.checkout_started", session=session.id, price=price)
    return str(session.url)


async def open_portal(connection: asyncpg.Connection, tenant_id: UUID) -> str:
    """`POST /api/billing/portal`: the URL of a Customer Portal session (card, invoices, cancel)."""
    settings = get_settings()
    _require_billing(settings)
    account = await lock_account(connection, tenant_id)
    if not account.stripe_customer_id:
        raise Conflict("No Stripe customer yet: start a checkout first")
    try:
        session = await stripe_client().v1.billing_portal.sessions.create_async(
            params={
                "customer": account.stripe_customer_id,
                "return_url": settings.BILLING_PORTAL_RETURN_URL or settings.PUBLIC_BASE_URL,
            }
        )
    except stripe.StripeError as exc:
        raise _unavailable(exc, "open the customer portal") from exc
    return str(session.url)

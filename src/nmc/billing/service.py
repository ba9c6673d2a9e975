"""Billing's state per tenant: the trial, what Stripe says about the subscription, and the entitlement.

Everything here runs in the caller's transaction on its asyncpg connection and takes the tenant's
`billing_accounts` row lock first (`lock_account`), so two deliveries for one tenant apply one after
the other and a re-fetched subscription is never overwritten by an older fetch.

Stripe does not order its events and retries them for days, so a delivery never applies its own
copy of the subscription when it can help it: the subscription it names is re-fetched from Stripe
and its current state applied. Only when Stripe cannot be reached does a `customer.subscription.*`
event apply its own object, and then only when it is newer than the newest state applied
(`stripe_state_at`); any other event is refused (503) so Stripe delivers it again later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import stripe
import structlog

from nmc.billing.entitlement import (
    PAYMENT_PROBLEM,
    TERMINAL,
    Entitlement,
    EntitlementReason,
    SubscriptionStatus,
    entitlement_for,
)
from nmc.billing.stripe_api import BillingNotConfigured, StripeUnavailable, as_dict, stripe_client, transient
from nmc.events import BillingEntitlementChanged, BillingPaymentFailed, BillingSubscriptionChanged, publish_on
from nmc.observability.correlation import current_correlation_id
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="billing")

# Stripe events billing applies (the endpoint should be subscribed to these, README "Billing").
CHECKOUT_COMPLETED = "checkout.session.completed"
SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)
INVOICE_PAID = "invoice.paid"
INVOICE_PAYMENT_FAILED = "invoice.payment_failed"
INVOICE_EVENTS = frozenset({INVOICE_PAID, INVOICE_PAYMENT_FAILED, "invoice.payment_action_required"})
HANDLED_EVENTS = frozenset({CHECKOUT_COMPLETED, *SUBSCRIPTION_EVENTS, *INVOICE_EVENTS})


@dataclass(frozen=True)
class Account:
    """A tenant's `billing_accounts` row."""

    tenant_id: UUID
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    subscription_status: str
    price_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    past_due_since: datetime | None
    texting_enabled: bool
    texting_enabled_until: datetime | None
    entitlement_reason: str
    entitlement_changed_at: datetime
    stripe_state_at: datetime | None
    checkout_session_id: str | None
    checkout_url: str | None
    checkout_price_id: str | None
    checkout_created_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Account:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def entitlement(self) -> Entitlement:
        return Entitlement(self.texting_enabled, EntitlementReason(self.entitlement_reason), self.texting_enabled_until)


@dataclass(frozen=True)
class SubscriptionState:
    """What billing keeps of a Stripe subscription object."""

    id: str
    customer: str | None
    status: str
    price_id: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool


def _moment(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int | float) and value else None


def object_id(value: Any) -> str | None:
    """An id field that may be expanded into its object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def subscription_state(obj: dict[str, Any]) -> SubscriptionState:
    """Both readings of the subscription object: the billing period on the subscription itself (API
    versions before 2025-03-31) or on its items (later ones); the plan is the first licensed item."""
    items = [item for item in ((obj.get("items") or {}).get("data") or []) if isinstance(item, dict)]
    licensed = [i for i in items if (((i.get("price") or {}).get("recurring") or {}).get("usage_type")) != "metered"]
    plan = (licensed or items or [{}])[0]
    return SubscriptionState(
        id=str(obj["id"]),
        customer=object_id(obj.get("customer")),
        status=str(obj.get("status") or ""),
        price_id=object_id(plan.get("price")),
        current_period_start=_moment(obj.get("current_period_start") or plan.get("current_period_start")),
        current_period_end=_moment(obj.get("current_period_end") or plan.get("current_period_end")),
        trial_end=_moment(obj.get("trial_end")),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
    )


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """Both readings: `invoice.subscription` (API versions before 2025-03-31) or
    `invoice.parent.subscription_details.subscription` (later ones)."""
    direct = object_id(invoice.get("subscription"))
    if direct:
        return direct
    details = ((invoice.get("parent") or {}).get("subscription_details")) or {}
    return object_id(details.get("subscription"))


# ---------------------------------------------------------------- the row
_ENSURE = """
    INSERT INTO billing_accounts (tenant_id, subscription_status, trial_end, texting_enabled, texting_enabled_until,
                                  entitlement_reason, entitlement_changed_at)
    SELECT $1, 'trialing', $2, true, $2, 'trialing', $3
    WHERE EXISTS (SELECT 1 FROM tenant_profiles WHERE id = $1)
    ON CONFLICT (tenant_id) DO NOTHING
"""
_ACCOUNT_COLUMNS = ", ".join(Account.__dataclass_fields__)
_LOCK = f"SELECT {_ACCOUNT_COLUMNS} FROM billing_accounts WHERE tenant_id = $1 FOR UPDATE"
_READ = f"SELECT {_ACCOUNT_COLUMNS} FROM billing_accounts WHERE tenant_id = $1"


def trial_length(settings: Settings) -> timedelta:
    return timedelta(days=settings.BILLING_TRIAL_DAYS)


async def start_trial(connection: asyncpg.Connection, tenant_id: UUID, started_at: datetime) -> bool:
    """A new tenant's card-less trial of `BILLING_TRIAL_DAYS` (once: a second call changes nothing)."""
    status = await connection.execute(_ENSURE, tenant_id, started_at + trial_length(get_settings()), started_at)
    return status.endswith(" 1")


async def read_account(connection: asyncpg.Connection, tenant_id: UUID) -> Account | None:
    row = await connection.fetchrow(_READ, tenant_id)
    return Account.from_row(row) if row else None


async def lock_account(connection: asyncpg.Connection, tenant_id: UUID) -> Account:
    """The tenant's row, locked until the transaction ends (made first, as a trial, if missing)."""
    await start_trial(connection, tenant_id, datetime.now(UTC))
    row = await connection.fetchrow(_LOCK, tenant_id)
    if row is None:
        raise LookupError(f"no tenant {tenant_id}")
    return Account.from_row(row)


# ---------------------------------------------------------------- applying a subscription's state
_APPLY = """
    UPDATE billing_accounts SET
        stripe_customer_id = coalesce($2, stripe_customer_id), stripe_subscription_id = $3, subscription_status = $4,
        price_id = $5, current_period_start = $6, current_period_end = $7, trial_end = $8, cancel_at_period_end = $9,
        past_due_since = $10, texting_enabled = $11, texting_enabled_until = $12, entitlement_reason = $13,
        entitlement_changed_at = $14, stripe_state_at = $15, updated_at = now()
    WHERE tenant_id = $1
"""
_SET_CUSTOMER = "UPDATE billing_accounts SET stripe_customer_id = $2, updated_at = now() WHERE tenant_id = $1"


@dataclass(frozen=True)
class Applied:
    subscription_changed: bool
    entitlement_changed: bool


def _newest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)


async def apply_subscription(
    connection: asyncpg.Connection,
    account: Account,
    state: SubscriptionState,
    *,
    at: datetime | None,
    causation_id: str | None = None,
    now: datetime | None = None,
) -> Applied:
    """Store `state` (Stripe's word as of `at`, the event's time; None: as of now, from a fetch of
    our own) for the locked `account`, recompute the entitlement, and publish what changed. Applying
    the same state again writes nothing and publishes nothing."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    at_or_now = min(at, now) if at is not None else now
    same_past_due = (
        account.subscription_status == SubscriptionStatus.PAST_DUE
        and account.stripe_subscription_id == state.id
        and account.past_due_since is not None
    )
    past_due_since = (
        (account.past_due_since if same_past_due else at_or_now)
        if state.status == SubscriptionStatus.PAST_DUE
        else None
    )
    entitlement = entitlement_for(
        state.status,
        has_subscription=True,
        trial_end=state.trial_end,
        past_due_since=past_due_since,
        grace=timedelta(days=settings.BILLING_GRACE_DAYS),
        now=now,
    )
    if entitlement.reason == EntitlementReason.UNKNOWN_STATUS:
        log.warning("billing.unknown_subscription_status", status=state.status, subscription=state.id)
    before = account.entitlement
    entitlement_changed = (before.enabled, before.reason) != (entitlement.enabled, entitlement.reason)
    subscription_changed = (
        account.stripe_subscription_id,
        account.subscription_status,
        account.price_id,
        account.current_period_end,
        account.trial_end,
        account.cancel_at_period_end,
    ) != (state.id, state.status, state.price_id, state.current_period_end, state.trial_end, state.cancel_at_period_end)
    stored = (
        state.customer or account.stripe_customer_id,
        state.current_period_start,
        past_due_since,
        entitlement.until,
    )
    unchanged = stored == (
        account.stripe_customer_id,
        account.current_period_start,
        account.past_due_since,
        account.texting_enabled_until,
    )
    newer = at is not None and (account.stripe_state_at is None or at > account.stripe_state_at)
    if unchanged and not subscription_changed and not entitlement_changed and not newer:
        return Applied(False, False)
    await connection.execute(
        _APPLY,
        account.tenant_id,
        state.customer,
        state.id,
        state.status,
        state.price_id,
        state.current_period_start,
        state.current_period_end,
        state.trial_end,
        state.cancel_at_period_end,
        past_due_since,
        entitlement.enabled,
        entitlement.until,
        entitlement.reason,
        now if entitlement_changed else account.entitlement_changed_at,
        _newest(account.stripe_state_at, at),
    )
    correlation_id = current_correlation_id()
    if subscription_changed:
        await publish_on(
            connection,
            BillingSubscriptionChanged(
                tenant_id=account.tenant_id,
                subscription_id=state.id,
                status=state.status,
                previous_status=account.subscription_status if account.stripe_subscription_id else None,
                price_id=state.price_id,
                current_period_end=state.current_period_end,
                trial_end=state.trial_end,
                cancel_at_period_end=state.cancel_at_period_end,
                correlation_id=correlation_id,
                causation_id=causation_id,
            ),
        )
        log.info("billing.subscription_changed", status=state.status, previous=account.subscription_status)
    if entitlement_changed:
        await publish_entitlement(connection, account.tenant_id, before, entitlement, causation_id=causation_id)
    return Applied(subscription_changed, entitlement_changed)


async def publish_entitlement(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    before: Entitlement,
    after: Entitlement,
    *,
    causation_id: str | None = None,
) -> None:
    await publish_on(
        connection,
        BillingEntitlementChanged(
            tenant_id=tenant_id,
            texting_enabled=after.enabled,
            reason=after.reason,
            previous_enabled=before.enabled,
            previous_reason=before.reason,
            until=after.until,
            correlation_id=current_correlation_id(),
            causation_id=causation_id,
        ),
    )
    log.info("billing.entitlement_changed", texting_enabled=after.enabled, reason=after.reason, previous=before.reason)


def adoptable(account: Account, state: SubscriptionState) -> bool:
    """Is `state` about the subscription this tenant's texting depends on? A late word about an older,
    finished subscription never replaces a live one."""
    if account.stripe_subscription_id in (None, state.id):
        return True
    if account.subscription_status in TERMINAL:
        return True
    return state.status not in TERMINAL


async def fetch_subscription(subscription_id: str) -> SubscriptionState | None:
    """Stripe's current state of a subscription; None if Stripe does not know it (404).

    Raises `StripeUnavailable` when Stripe cannot answer now (`BillingNotConfigured` without a key)."""
    try:
        fetched = await stripe_client().v1.subscriptions.retrieve_async(subscription_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return None
        raise
    except stripe.StripeError as exc:
        if transient(exc) or isinstance(exc, stripe.AuthenticationError):
            raise StripeUnavailable(f"Stripe did not answer for {subscription_id}: {exc.user_message or exc}") from exc
        raise
    return subscription_state(as_dict(fetched))


# ---------------------------------------------------------------- one Stripe event
@dataclass(frozen=True)
class StripeEventFacts:
    """A Stripe event as billing reads it (the pipeline's parsed payload, or an event listed by reconcile)."""

    id: str
    type: str
    created: datetime
    object: dict[str, Any]


def subscription_id_of(event: StripeEventFacts) -> str | None:
    if event.type in SUBSCRIPTION_EVENTS:
        return object_id(event.object.get("id"))
    if event.type in INVOICE_EVENTS:
        return invoice_subscription_id(event.object)
    if event.type == CHECKOUT_COMPLETED:
        return object_id(event.object.get("subscription"))
    return None


async def apply_event(connection: asyncpg.Connection, tenant_id: UUID, event: StripeEventFacts) -> Applied | None:
    """Apply one Stripe event for `tenant_id` (routed by the caller); None when it changed nothing."""
    account = await lock_account(connection, tenant_id)
    obj = event.object
    customer = object_id(obj.get("customer"))
    if event.type == CHECKOUT_COMPLETED and customer and customer != account.stripe_customer_id:
        await connection.execute(_SET_CUSTOMER, tenant_id, customer)
        account = replace(account, stripe_customer_id=customer)
    subscription_id = subscription_id_of(event)
    if subscription_id is None:
        log.info("billing.event_without_subscription", event_type=event.type, stripe_event=event.id)
        return None
    try:
        state = await fetch_subscription(subscription_id)
    except (StripeUnavailable, BillingNotConfigured) as exc:
        if event.type not in SUBSCRIPTION_EVENTS:
            raise StripeUnavailable(f"{event.type} {event.id} needs Stripe's current subscription: {exc}") from exc
        if account.stripe_state_at is not None and event.created <= account.stripe_state_at:
            log.info("billing.stale_event_ignored", event_type=event.type, stripe_event=event.id)
            return None
        log.warning("billing.applied_event_copy", event_type=event.type, stripe_event=event.id, error=str(exc))
        state = subscription_state(obj)
    if state is None:
        log.warning("billing.subscription_unknown_to_stripe", subscription=subscription_id, stripe_event=event.id)
        return None
    if not adoptable(account, state):
        log.info("billing.other_subscription_ignored", subscription=state.id, status=state.status)
        return None
    applied = await apply_subscription(connection, account, state, at=event.created, causation_id=event.id)
    if event.type == INVOICE_PAYMENT_FAILED and state.status in PAYMENT_PROBLEM:
        await publish_on(
            connection,
            BillingPaymentFailed(
                tenant_id=tenant_id,
                invoice_id=str(obj.get("id") or event.id),
                subscription_id=state.id,
                amount_due=int(obj.get("amount_due") or 0),
                currency=str(obj.get("currency") or "usd"),
                attempt_count=int(obj.get("attempt_count") or 0),
                next_payment_attempt=_moment(obj.get("next_payment_attempt")),
                hosted_invoice_url=obj.get("hosted_invoice_url") or None,
                correlation_id=current_correlation_id(),
                causation_id=event.id,
            ),
        )
    return applied


_TENANT_OF_CUSTOMER = "SELECT tenant_id FROM billing_accounts WHERE stripe_customer_id = $1"
_TENANT_EXISTS = "SELECT id FROM tenant_profiles WHERE id = $1"


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


async def tenant_of(connection: asyncpg.Connection, obj: dict[str, Any]) -> UUID | None:
    """The tenant a Stripe object belongs to: by its customer (we created every customer), else by the
    tenant id we put in `client_reference_id` and metadata."""
    customer = object_id(obj.get("customer"))
    if customer and (tenant := await connection.fetchval(_TENANT_OF_CUSTOMER, customer)):
        return tenant  # type: ignore[no-any-return]
    details = ((obj.get("parent") or {}).get("subscription_details")) or obj.get("subscription_details") or {}
    for candidate in (
        obj.get("client_reference_id"),
        (obj.get("metadata") or {}).get("tenant_id"),
        (details.get("metadata") or {}).get("tenant_id"),
    ):
        if (tenant_id := _uuid(candidate)) and await connection.fetchval(_TENANT_EXISTS, tenant_id):
            return tenant_id
    return None


# ---------------------------------------------------------------- lapsing on its own
_LAPSED = f"""
    SELECT {_ACCOUNT_COLUMNS} FROM billing_accounts
    WHERE texting_enabled AND texting_enabled_until <= now()
    ORDER BY texting_enabled_until
    LIMIT 500
    FOR UPDATE SKIP LOCKED
"""
_LAPSE = """
    UPDATE billing_accounts SET texting_enabled = false, texting_enabled_until = NULL, entitlement_reason = $2,
                                entitlement_changed_at = now(), updated_at = now()
    WHERE tenant_id = $1
"""


async def expire_lapsed(connection: asyncpg.Connection) -> int:
    """Record grace periods and trials that ran out (the sending path already treats them as off, by
    `texting_enabled_until`) and publish the change, so the owner is told. In the caller's transaction."""
    now = datetime.now(UTC)
    lapsed = [Account.from_row(row) for row in await connection.fetch(_LAPSED)]
    for account in lapsed:
        after = account.entitlement.effective(now)
        await connection.execute(_LAPSE, account.tenant_id, after.reason)
        await publish_entitlement(connection, account.tenant_id, account.entitlement, after)
    return len(lapsed)

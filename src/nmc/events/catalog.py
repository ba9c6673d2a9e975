"""The Event Catalog: one versioned msgspec Struct per domain event.

Outbox rows are business facts: a row is written only from a catalog event, and a row read back
(dispatch, replay) is validated against the catalog entry for its name and version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID, uuid4

import msgspec

E164_PATTERN = r"^\+[1-9]\d{6,14}$"
E164 = Annotated[str, msgspec.Meta(pattern=E164_PATTERN, description="Phone number in E.164")]


def _now() -> datetime:
    return datetime.now(UTC)


class DomainEvent(msgspec.Struct, kw_only=True, frozen=True):
    """Envelope fields every event carries."""

    name: ClassVar[str]
    version: ClassVar[int]
    # False for a record nobody needs promptly: written without a dispatch job, settled (or dispatched,
    # if a subscriber appears) by the worker's sweep within seconds. Saves a job per event on a hot path.
    wake_worker: ClassVar[bool] = True

    event_id: UUID = msgspec.field(default_factory=uuid4)
    occurred_at: datetime = msgspec.field(default_factory=_now)
    tenant_id: UUID | None = None
    correlation_id: str
    causation_id: str | None = None


class TenantCreated(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "tenant.created"
    version: ClassVar[int] = 1

    tenant_id: UUID
    business_name: str


class TenantDeactivated(DomainEvent, kw_only=True, frozen=True):
    """The tenant's Clerk organisation was deleted: texting is off already (the tenant's status), its
    numbers are released at Twilio by telephony; calendars, billing and others may react here too.
    The tenant's data is kept for the retention periods."""

    name: ClassVar[str] = "tenant.deactivated"
    version: ClassVar[int] = 1

    tenant_id: UUID
    clerk_org_id: str | None = None
    deactivated_at: datetime


class CallMissed(DomainEvent, kw_only=True, frozen=True):
    """A caller reached a tenant number and nobody answered: text them back."""

    name: ClassVar[str] = "call.missed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    call_id: UUID
    call_sid: str
    caller: E164
    tenant_number: E164
    dial_status: str
    # When our web received the webhook: the start of the first-SMS latency.
    webhook_received_at: datetime


class FirstSmsSent(DomainEvent, kw_only=True, frozen=True):
    """The first SMS was accepted by Twilio. Its KPI fact rides the acceptance update (see nmc.kpis)."""

    name: ClassVar[str] = "sms.first_sent"
    version: ClassVar[int] = 1
    wake_worker: ClassVar[bool] = False  # one per missed call, on the benchmarked path; nobody reacts

    tenant_id: UUID
    call_id: UUID
    message_id: UUID
    latency_ms: float


class MessageStatusChanged(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "message.status_changed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    message_id: UUID
    status: str
    error_code: int | None = None


class MessageReceived(DomainEvent, kw_only=True, frozen=True):
    """A caller's text (SMS or MMS) reached a tenant number and joined a thread."""

    name: ClassVar[str] = "message.received"
    version: ClassVar[int] = 1

    tenant_id: UUID
    thread_id: UUID
    message_id: UUID
    caller: str
    tenant_number: E164
    num_media: int = 0
    # The caller's first message in a thread we texted back (a lead's reply; not a STOP).
    first_reply: bool = False
    # What the body did: "opted_out" | "opted_in" | "help", or None for a plain message.
    action: str | None = None


class OutboundSmsRequested(DomainEvent, kw_only=True, frozen=True):
    """A text other than the first SMS is queued: its `conv_messages` row (status `pending`, unique
    `idempotency_key`) was written in the same transaction; the subscriber sends it once, with guards."""

    name: ClassVar[str] = "sms.outbound_requested"
    version: ClassVar[int] = 1

    tenant_id: UUID
    message_id: UUID
    thread_id: UUID
    kind: str  # reply | follow_up | help | owner_alert


class CallerOptedOut(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "caller.opted_out"
    version: ClassVar[int] = 1

    tenant_id: UUID
    phone: str
    source: str  # keyword | twilio_opt_out_type | twilio_21610
    thread_id: UUID | None = None


class CallerOptedIn(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "caller.opted_in"
    version: ClassVar[int] = 1

    tenant_id: UUID
    phone: str
    source: str
    thread_id: UUID | None = None


class BookingHeld(DomainEvent, kw_only=True, frozen=True):
    """A slot is held for `HOLD_TTL_MINUTES` (the hold's allocation keeps everyone else off it)."""

    name: ClassVar[str] = "booking.held"
    version: ClassVar[int] = 1

    tenant_id: UUID
    hold_id: UUID
    resource_id: UUID
    job_type_id: UUID
    starts_at: datetime
    ends_at: datetime
    expires_at: datetime


class BookingConfirmed(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "booking.confirmed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    booking_id: UUID
    resource_id: UUID
    job_type_id: UUID
    starts_at: datetime
    ends_at: datetime
    source: str  # api | sms
    hold_id: UUID | None = None
    customer_phone: E164 | None = None


class BookingCancelled(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "booking.cancelled"
    version: ClassVar[int] = 1

    tenant_id: UUID
    booking_id: UUID
    resource_id: UUID
    starts_at: datetime
    ends_at: datetime
    reason: str | None = None


class BookingRescheduled(DomainEvent, kw_only=True, frozen=True):
    """A confirmed booking moved (time and/or resource); calendars mirror it."""

    name: ClassVar[str] = "booking.rescheduled"
    version: ClassVar[int] = 1

    tenant_id: UUID
    booking_id: UUID
    resource_id: UUID
    starts_at: datetime
    ends_at: datetime
    previous_resource_id: UUID
    previous_starts_at: datetime
    previous_ends_at: datetime


class HoldExpired(DomainEvent, kw_only=True, frozen=True):
    """A hold ran out unbooked and was deleted (by the hold GC, or by a writer that needed its slot)."""

    name: ClassVar[str] = "hold.expired"
    version: ClassVar[int] = 1

    tenant_id: UUID
    hold_id: UUID
    resource_id: UUID
    job_type_id: UUID
    starts_at: datetime
    ends_at: datetime
    expires_at: datetime


class CalendarNeedsReauth(DomainEvent, kw_only=True, frozen=True):
    """A resource's calendar connection lost its grant (401, `invalid_grant`): polling stopped for it, its
    busy time stays as last known, and the owner is told once (until they connect it again)."""

    name: ClassVar[str] = "calendar.needs_reauth"
    version: ClassVar[int] = 1

    tenant_id: UUID
    connection_id: UUID
    resource_id: UUID
    provider: str  # google | jobber


class BillingSubscriptionChanged(DomainEvent, kw_only=True, frozen=True):
    """What Stripe says about a tenant's subscription changed (a webhook, `just billing-reconcile`, checkout)."""

    name: ClassVar[str] = "billing.subscription_changed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    subscription_id: str | None
    status: str  # Stripe's subscription status (`trialing` also for our own card-less trial)
    previous_status: str | None = None
    price_id: str | None = None
    current_period_end: datetime | None = None
    trial_end: datetime | None = None
    cancel_at_period_end: bool = False


class BillingEntitlementChanged(DomainEvent, kw_only=True, frozen=True):
    """Texting turned on or off for a tenant (or stayed on/off for another reason). Off: every text
    but the owner's billing notices is suppressed with `not_entitled`; conversations tells the owner."""

    name: ClassVar[str] = "billing.entitlement_changed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    texting_enabled: bool
    reason: str  # nmc.billing EntitlementReason: trialing, active, past_due_grace, canceled, ...
    previous_enabled: bool | None = None
    previous_reason: str | None = None
    until: datetime | None = None  # while on: when it lapses unless paid (grace period, our trial)


class BillingPaymentFailed(DomainEvent, kw_only=True, frozen=True):
    """A subscription invoice's payment failed and the subscription still has a payment problem."""

    name: ClassVar[str] = "billing.payment_failed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    invoice_id: str
    subscription_id: str | None = None
    amount_due: int = 0  # in the currency's smallest unit
    currency: str = "usd"
    attempt_count: int = 0
    next_payment_attempt: datetime | None = None
    hosted_invoice_url: str | None = None


CATALOG: dict[tuple[str, int], type[DomainEvent]] = {
    (event.name, event.version): event
    for event in (
        TenantCreated,
        TenantDeactivated,
        CallMissed,
        FirstSmsSent,
        MessageStatusChanged,
        BookingHeld,
        BookingConfirmed,
        BookingCancelled,
        BookingRescheduled,
        HoldExpired,
        MessageReceived,
        OutboundSmsRequested,
        CallerOptedOut,
        CallerOptedIn,
        CalendarNeedsReauth,
        BillingSubscriptionChanged,
        BillingEntitlementChanged,
        BillingPaymentFailed,
    )
}


class UnknownEvent(ValueError):
    """A row names an event (or version) the catalog does not hold."""


def catalog_entry(name: str, version: int) -> type[DomainEvent]:
    try:
        return CATALOG[(name, version)]
    except KeyError:
        raise UnknownEvent(f"{name} v{version} is not in the Event Catalog") from None


def validated(event: DomainEvent) -> dict[str, Any]:
    """The event as the JSON the outbox stores, checked against its Struct's constraints."""
    payload: dict[str, Any] = msgspec.to_builtins(event)
    msgspec.convert(payload, type(event))
    return payload


def load_event(name: str, version: int, payload: dict[str, Any]) -> DomainEvent:
    """Rebuild a stored event; raises `msgspec.ValidationError` if it no longer fits the catalog."""
    return msgspec.convert(payload, catalog_entry(name, version))


def json_schemas() -> dict[str, Any]:
    """Every event's JSON Schema, keyed `name@vN` (`just catalog`)."""
    events = list(CATALOG.values())
    schemas, components = msgspec.json.schema_components(events, ref_template="#/$defs/{name}")
    return {
        "events": {f"{e.name}@v{e.version}": schema for e, schema in zip(events, schemas, strict=True)},
        "$defs": components,
    }

"""Domain events: the Event Catalog, publishing into the outbox, dispatch to subscribers, history.

Modules publish with `publish`/`publish_on` in their own transaction, subscribe with `@subscriber`
in their `handlers.py`, and signal a subscriber's verdict with `Deferred` or `PermanentFailure`.
"""

from nmc.events import metrics as _outbox_health_probe  # noqa: F401  (registers the /metrics probe)
from nmc.events.catalog import (
    E164,
    E164_PATTERN,
    BillingEntitlementChanged,
    BillingPaymentFailed,
    BillingSubscriptionChanged,
    BookingCancelled,
    BookingConfirmed,
    BookingHeld,
    BookingRescheduled,
    CalendarNeedsReauth,
    CallerOptedIn,
    CallerOptedOut,
    CallMissed,
    DomainEvent,
    FirstSmsSent,
    HoldExpired,
    MessageReceived,
    MessageStatusChanged,
    OutboundSmsRequested,
    TenantCreated,
    TenantDeactivated,
    json_schemas,
)
from nmc.events.dispatcher import (
    Deferred,
    PermanentFailure,
    dispatch,
    release_deferred,
    set_dispatcher_id,
    sweep,
)
from nmc.events.history import Unreadable, held_events, oldest_occurrence
from nmc.events.metrics import Overdue, overdue_events
from nmc.events.outbox import (
    publish,
    publish_in,
    publish_on,
    published_cte,
    published_in_statement,
    published_values,
)
from nmc.events.parking import Parked, ParkRefused, park
from nmc.events.replay import ReplayFilter, ReplayReport
from nmc.events.replay import replay as replay_parked
from nmc.events.settling import settle_on
from nmc.events.subscribers import registry_complete, subscriber

__all__ = [
    "E164",
    "E164_PATTERN",
    "BillingEntitlementChanged",
    "BillingPaymentFailed",
    "BillingSubscriptionChanged",
    "BookingCancelled",
    "BookingConfirmed",
    "BookingHeld",
    "BookingRescheduled",
    "CalendarNeedsReauth",
    "CallMissed",
    "CallerOptedIn",
    "CallerOptedOut",
    "Deferred",
    "DomainEvent",
    "FirstSmsSent",
    "HoldExpired",
    "MessageReceived",
    "MessageStatusChanged",
    "OutboundSmsRequested",
    "Overdue",
    "ParkRefused",
    "Parked",
    "PermanentFailure",
    "ReplayFilter",
    "ReplayReport",
    "TenantCreated",
    "TenantDeactivated",
    "Unreadable",
    "dispatch",
    "held_events",
    "json_schemas",
    "oldest_occurrence",
    "overdue_events",
    "park",
    "publish",
    "publish_in",
    "publish_on",
    "published_cte",
    "published_in_statement",
    "published_values",
    "registry_complete",
    "release_deferred",
    "replay_parked",
    "set_dispatcher_id",
    "settle_on",
    "subscriber",
    "sweep",
]

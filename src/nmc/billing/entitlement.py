"""The entitlement: may a tenant's texts go out, and why. Pure rules, no database.

Texting is on while the subscription is `trialing` or `active`, and while it is `past_due` for
`BILLING_GRACE_DAYS` from when we first saw it so; our own card-less trial (no Stripe subscription
yet) is on until its `trial_end`. Anything else is off: canceled, unpaid, incomplete,
incomplete_expired, paused (a trial that ended without a payment method), the grace or trial over.

An entitlement that lapses on its own carries `until`: the sending path checks it (`ENTITLED_SQL`),
so it is exact to the second, and the periodic expiry (`expire_lapsed`) records the change and tells
the owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"
    CANCELED = "canceled"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    PAUSED = "paused"


# A subscription in one of these is over: a newer one of the same customer replaces it.
TERMINAL = frozenset({SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED})
# Statuses with a payment problem: a failed invoice is worth telling the owner about.
PAYMENT_PROBLEM = frozenset({SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID, SubscriptionStatus.INCOMPLETE})


class EntitlementReason(StrEnum):
    TRIALING = "trialing"  # Stripe's trial, or ours (no subscription yet)
    ACTIVE = "active"
    GRACE = "past_due_grace"  # a payment failed; on until the grace period ends
    GRACE_OVER = "past_due_grace_over"
    TRIAL_ENDED = "trial_ended"  # our own trial ran out without a subscription
    UNPAID = "unpaid"
    CANCELED = "canceled"
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    PAUSED = "paused"
    UNKNOWN_STATUS = "unknown_status"  # a status Stripe added after this code: off, and logged
    BILLING_DISABLED = "billing_disabled"  # BILLING_ENABLED=false: everyone may text


# What replaces a lapsed entitlement (`texting_enabled_until` passed).
LAPSED = {
    EntitlementReason.GRACE: EntitlementReason.GRACE_OVER,
    EntitlementReason.TRIALING: EntitlementReason.TRIAL_ENDED,
}


@dataclass(frozen=True)
class Entitlement:
    enabled: bool
    reason: EntitlementReason
    until: datetime | None = None  # while enabled: when it lapses on its own

    def effective(self, now: datetime) -> Entitlement:
        """As of `now`: a lapsed entitlement is off."""
        if self.enabled and self.until is not None and self.until <= now:
            return Entitlement(False, LAPSED.get(self.reason, EntitlementReason.TRIAL_ENDED))
        return self


def entitlement_for(
    status: str,
    *,
    has_subscription: bool,
    trial_end: datetime | None,
    past_due_since: datetime | None,
    grace: timedelta,
    now: datetime,
) -> Entitlement:
    if not has_subscription:
        # Our own trial: on until it ends (no end recorded: on).
        return Entitlement(True, EntitlementReason.TRIALING, trial_end).effective(now)
    if status == SubscriptionStatus.TRIALING:
        return Entitlement(True, EntitlementReason.TRIALING)
    if status == SubscriptionStatus.ACTIVE:
        return Entitlement(True, EntitlementReason.ACTIVE)
    if status == SubscriptionStatus.PAST_DUE:
        return Entitlement(True, EntitlementReason.GRACE, (past_due_since or now) + grace).effective(now)
    try:
        return Entitlement(False, EntitlementReason(status))
    except ValueError:
        return Entitlement(False, EntitlementReason.UNKNOWN_STATUS)

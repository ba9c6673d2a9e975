"""Billing: Stripe subscriptions, the entitlement that gates texting, usage metering (issue #12).

Other modules use this face: the entitlement as SQL for the planning queries (`ENTITLED_SQL`), the
usage a text's acceptance records (`usage_cte`, `count_segments`), the REST and webhook controllers
(for the app), the `tenant.created` subscriber (for the worker), the periodic tick (for the jobs
process) and `reconcile` (for `just billing-reconcile`). Billing imports no module above it: the
owner hears about billing through domain events conversations subscribes to.
"""

from nmc.billing.controllers import BillingController
from nmc.billing.entitlement import EntitlementReason, SubscriptionStatus
from nmc.billing.published import ENTITLED_SQL
from nmc.billing.reconciliation import ReconcileReport, reconcile
from nmc.billing.segments import count_segments
from nmc.billing.tick import billing_tick
from nmc.billing.usage import UsageReport, report_usage, usage_cte
from nmc.billing.webhooks import STRIPE_WEBHOOKS, StripeWebhooks

__all__ = [
    "ENTITLED_SQL",
    "STRIPE_WEBHOOKS",
    "BillingController",
    "EntitlementReason",
    "ReconcileReport",
    "StripeWebhooks",
    "SubscriptionStatus",
    "UsageReport",
    "billing_tick",
    "count_segments",
    "reconcile",
    "report_usage",
    "usage_cte",
]

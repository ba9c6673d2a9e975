"""Billing's periodic work (issue #12), sent every minute by the worker's cron: lapsed entitlements
recorded (the owner is told), then metered usage reported to Stripe in batches. A Stripe outage ends a
run early; the next run picks up what is left (nothing is lost: unreported rows stay unreported)."""

from __future__ import annotations

import asyncio

import dramatiq

from nmc.billing import billing_tick as run_billing_tick

BILLING_QUEUE = "billing"


# One run at a time is enough (usage reporting also holds an advisory lock); a failed run is not retried
# by Dramatiq: the next minute's run does the same work.
@dramatiq.actor(queue_name=BILLING_QUEUE, max_retries=0, time_limit=5 * 60 * 1000)
def billing_tick() -> None:
    asyncio.run(run_billing_tick())

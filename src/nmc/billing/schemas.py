"""What the billing REST API takes and answers (msgspec; documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

PriceId = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_]+$")]


class UsageRead(msgspec.Struct, kw_only=True):
    period_start: datetime
    texts: int  # texts Twilio accepted since `period_start` (our own records)
    segments: int  # what they are billed as (GSM-7 / UCS-2 segments)


class BillingRead(msgspec.Struct, kw_only=True):
    billing_enabled: bool
    plan: str | None  # the subscription's plan price id
    subscription_status: str  # Stripe's; `trialing` also for our own card-less trial
    subscription_id: str | None
    current_period_end: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    texting_enabled: bool
    # trialing | active | past_due_grace | past_due_grace_over | trial_ended | canceled | unpaid |
    # incomplete | incomplete_expired | paused | billing_disabled
    texting_reason: str
    texting_enabled_until: datetime | None  # while on: when it lapses unless paid
    texting_changed_at: datetime
    usage: UsageRead


class CheckoutCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    price: PriceId | None = None  # a plan price this deployment offers; the base plan by default


class UrlRead(msgspec.Struct):
    url: str

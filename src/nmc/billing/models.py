"""Billing's tables: each tenant's Stripe customer, subscription and texting entitlement
(`billing_accounts`), and every text Twilio accepted, as metered usage to report (`billing_usage`)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Boolean, ForeignKey, Index, Integer, SmallInteger, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column


class BillingAccount(DefaultBase):
    """One row per tenant: what Stripe says about its subscription, and whether it may text.

    Written only by billing: the tenant's trial (on `tenant.created`), Stripe's webhooks,
    `just billing-reconcile`, checkout, and the periodic expiry of a grace period or trial. Read on
    the sending path through `ENTITLED_SQL` (a primary-key lookup inside the planning query).
    """

    __tablename__ = "billing_accounts"

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), default=None)
    # Stripe's subscription status (trialing, active, past_due, unpaid, canceled, incomplete,
    # incomplete_expired, paused), or `trialing` for our own card-less trial (no subscription id).
    subscription_status: Mapped[str] = mapped_column(String(30))
    price_id: Mapped[str | None] = mapped_column(String(255), default=None)  # the plan's price
    current_period_start: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    current_period_end: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    trial_end: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # When we first saw the subscription past_due (the grace period runs from here); NULL otherwise.
    past_due_since: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # The entitlement: may this tenant's texts go out, why, and since when.
    texting_enabled: Mapped[bool] = mapped_column(Boolean)
    # While enabled: when it lapses on its own (the end of a grace period or of our trial); NULL: never.
    texting_enabled_until: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    entitlement_reason: Mapped[str] = mapped_column(String(40))
    entitlement_changed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    # The newest Stripe timestamp (event `created`) whose state was applied: an older event's own
    # object is never applied over it.
    stripe_state_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # The open Checkout Session, reused by a second click within minutes.
    checkout_session_id: Mapped[str | None] = mapped_column(String(255), default=None)
    checkout_url: Mapped[str | None] = mapped_column(Text, default=None)
    checkout_price_id: Mapped[str | None] = mapped_column(String(255), default=None)
    checkout_created_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class BillingUsage(DefaultBase):
    """A text Twilio accepted, as metered usage: written by the statement that records the acceptance
    (`usage_cte`), reported to the Stripe meter by the jobs process with the message id as identifier.

    No foreign key to the message: `conv_messages` is conversations' and is deleted by retention."""

    __tablename__ = "billing_usage"
    __table_args__ = (
        Index("ix_billing_usage_unreported", "occurred_at", postgresql_where=text("reported_at IS NULL")),
        Index("ix_billing_usage_tenant_occurred", "tenant_id", "occurred_at"),
    )

    message_id: Mapped[UUID] = mapped_column(primary_key=True)
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    segments: Mapped[int] = mapped_column(SmallInteger)
    occurred_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    # Set once settled: reported (or a duplicate Stripe already had), or never billable (`report_outcome`).
    reported_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # reported | duplicate | no_customer | too_old | refused
    report_outcome: Mapped[str | None] = mapped_column(String(20), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)

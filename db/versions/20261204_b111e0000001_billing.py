"""billing: each tenant's Stripe customer, subscription and texting entitlement; metered usage

Revision ID: b111e0000001
Revises: ca1e00000001
Create Date: 2026-12-04 09:00:00+00:00

Issue #12, the `billing` module's own tables. Additive only:
- `billing_accounts`: one row per tenant (customer, subscription status/period/trial, the entitlement
  `texting_enabled` + `entitlement_reason` + `entitlement_changed_at`, `texting_enabled_until`, the
  newest Stripe state applied, the open Checkout Session). Tenants that exist already get the card-less
  trial a new tenant gets, 14 days (BILLING_TRIAL_DAYS' default) from this migration;
- `billing_usage`: every text Twilio accepted, with its SMS segments, until reported to the Stripe meter.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "b111e0000001"
down_revision = "ca1e00000001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "billing_accounts",
        sa.Column("tenant_id", GUID(length=16), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("subscription_status", sa.String(length=30), nullable=False),
        sa.Column("price_id", sa.String(length=255), nullable=True),
        sa.Column("current_period_start", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("current_period_end", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("trial_end", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("cancel_at_period_end", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("past_due_since", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("texting_enabled", sa.Boolean(), nullable=False),
        sa.Column("texting_enabled_until", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("entitlement_reason", sa.String(length=40), nullable=False),
        sa.Column(
            "entitlement_changed_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("stripe_state_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("checkout_session_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("checkout_price_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_created_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_billing_accounts_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_billing_accounts")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_billing_accounts_stripe_customer_id")),
    )
    op.create_table(
        "billing_usage",
        sa.Column("message_id", GUID(length=16), nullable=False),
        sa.Column("tenant_id", GUID(length=16), nullable=False),
        sa.Column("segments", sa.SmallInteger(), nullable=False),
        sa.Column("occurred_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("reported_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("report_outcome", sa.String(length=20), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_billing_usage_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_billing_usage")),
    )
    op.create_index(
        "ix_billing_usage_unreported",
        "billing_usage",
        ["occurred_at"],
        unique=False,
        postgresql_where=sa.text("reported_at IS NULL"),
    )
    op.create_index("ix_billing_usage_tenant_occurred", "billing_usage", ["tenant_id", "occurred_at"], unique=False)
    op.execute(
        """
        INSERT INTO billing_accounts (tenant_id, subscription_status, trial_end, texting_enabled, texting_enabled_until,
                                      entitlement_reason)
        SELECT id, 'trialing', now() + interval '14 days', true, now() + interval '14 days', 'trialing' FROM tenants
        """
    )


def downgrade() -> None:
    op.drop_index("ix_billing_usage_tenant_occurred", table_name="billing_usage")
    op.drop_index(
        "ix_billing_usage_unreported", table_name="billing_usage", postgresql_where=sa.text("reported_at IS NULL")
    )
    op.drop_table("billing_usage")
    op.drop_table("billing_accounts")

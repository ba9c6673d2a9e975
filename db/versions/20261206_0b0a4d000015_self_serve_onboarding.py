"""self-serve onboarding: Clerk organisations as tenants, bought numbers, verified forwarding, test calls

Revision ID: 0b0a4d000015
Revises: d13000000002
Create Date: 2026-12-06 09:00:00+00:00

Issue #15. Additive only: nullable columns, columns with constant or now() defaults, one new table.

- `tenants`: `clerk_updated_at` (the organisation's version last applied, for out-of-order
  webhooks), `deactivated_at`, `hours_set_at` (the onboarding step "business hours and timezone").
  The new statuses `onboarding` and `deactivated` fit `status` varchar(20) as it is.
- `tenant_phone_numbers`: the Twilio SID, how it came to us, the purchase's idempotency key, the
  forwarding number's verification (a code texted to it: hash, sent, expiry, attempts) and the
  release. `forwarding_verified_at` defaults to now(): every existing number (wired by an operator)
  keeps ringing its forwarding number; only self-serve numbers start unverified.
- `users`: the Clerk membership (id, role as Clerk spells it, identifier, version, removal).
- `telephony_test_calls`: onboarding's test calls (telephony's).
- The published view `tenant_numbers` leaves released numbers out (same columns).
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "0b0a4d000015"
down_revision = "d13000000002"
branch_labels = None
depends_on = None


def _moment(name: str, **kwargs: object) -> sa.Column:
    return sa.Column(name, DateTimeUTC(timezone=True), nullable=True, **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.add_column("tenants", _moment("clerk_updated_at"))
    op.add_column("tenants", _moment("deactivated_at"))
    op.add_column("tenants", _moment("hours_set_at"))

    op.add_column("tenant_phone_numbers", sa.Column("twilio_sid", sa.String(length=34), nullable=True))
    op.add_column(
        "tenant_phone_numbers",
        sa.Column("source", sa.String(length=20), server_default=sa.text("'operator'"), nullable=False),
    )
    op.add_column("tenant_phone_numbers", sa.Column("purchase_key", sa.String(length=200), nullable=True))
    op.add_column("tenant_phone_numbers", _moment("forwarding_verified_at", server_default=sa.text("now()")))
    op.add_column("tenant_phone_numbers", sa.Column("forwarding_code_hash", sa.String(length=64), nullable=True))
    op.add_column("tenant_phone_numbers", _moment("forwarding_code_sent_at"))
    op.add_column("tenant_phone_numbers", _moment("forwarding_code_expires_at"))
    op.add_column(
        "tenant_phone_numbers",
        sa.Column("forwarding_code_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("tenant_phone_numbers", _moment("released_at"))
    op.create_unique_constraint(op.f("uq_tenant_phone_numbers_twilio_sid"), "tenant_phone_numbers", ["twilio_sid"])
    op.create_unique_constraint(
        "uq_tenant_phone_numbers_purchase_key", "tenant_phone_numbers", ["tenant_id", "purchase_key"]
    )

    op.add_column("users", sa.Column("clerk_role", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("clerk_membership_id", sa.String(length=64), nullable=True))
    op.add_column("users", sa.Column("identifier", sa.String(length=320), nullable=True))
    op.add_column("users", _moment("clerk_updated_at"))
    op.add_column("users", _moment("removed_at"))

    op.create_table(
        "telephony_test_calls",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("tenant_id", GUID(length=16), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("tenant_number", sa.String(length=20), nullable=False),
        sa.Column("from_number", sa.String(length=20), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_telephony_test_calls_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telephony_test_calls")),
        sa.UniqueConstraint("call_sid", name=op.f("uq_telephony_test_calls_call_sid")),
    )
    op.create_index(op.f("ix_telephony_test_calls_tenant_id"), "telephony_test_calls", ["tenant_id"], unique=False)

    op.execute(
        "CREATE OR REPLACE VIEW tenant_numbers AS SELECT twilio_number, tenant_id, forwarding_number "
        "FROM tenant_phone_numbers WHERE released_at IS NULL"
    )


def downgrade() -> None:
    op.execute(
        "CREATE OR REPLACE VIEW tenant_numbers AS SELECT twilio_number, tenant_id, forwarding_number "
        "FROM tenant_phone_numbers"
    )
    op.drop_index(op.f("ix_telephony_test_calls_tenant_id"), table_name="telephony_test_calls")
    op.drop_table("telephony_test_calls")
    for column in ("removed_at", "clerk_updated_at", "identifier", "clerk_membership_id", "clerk_role"):
        op.drop_column("users", column)
    op.drop_constraint("uq_tenant_phone_numbers_purchase_key", "tenant_phone_numbers", type_="unique")
    op.drop_constraint(op.f("uq_tenant_phone_numbers_twilio_sid"), "tenant_phone_numbers", type_="unique")
    for column in (
        "released_at",
        "forwarding_code_attempts",
        "forwarding_code_expires_at",
        "forwarding_code_sent_at",
        "forwarding_code_hash",
        "forwarding_verified_at",
        "purchase_key",
        "source",
        "twilio_sid",
    ):
        op.drop_column("tenant_phone_numbers", column)
    for column in ("hours_set_at", "deactivated_at", "clerk_updated_at"):
        op.drop_column("tenants", column)

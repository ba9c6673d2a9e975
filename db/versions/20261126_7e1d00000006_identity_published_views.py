"""identity: the views other modules read instead of identity's tables

Revision ID: 7e1d00000006
Revises: 648c177218e7
Create Date: 2026-11-26 18:10:00+00:00

`tenant_profiles` (what a tenant is called, its zone, hours and status) and `tenant_numbers` (which
tenant a Twilio number belongs to, and where it forwards). Conversations and scheduling join these
in their hot queries: a plain view is inlined by the planner (no cost), and identity may reshape its
tables as long as the views keep their columns. Additive.
"""

from __future__ import annotations

from alembic import op

revision = "7e1d00000006"
down_revision = "648c177218e7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE VIEW tenant_profiles AS SELECT id, name, timezone, business_hours, status FROM tenants")
    op.execute(
        "CREATE VIEW tenant_numbers AS SELECT twilio_number, tenant_id, forwarding_number FROM tenant_phone_numbers"
    )


def downgrade() -> None:
    op.execute("DROP VIEW tenant_numbers")
    op.execute("DROP VIEW tenant_profiles")

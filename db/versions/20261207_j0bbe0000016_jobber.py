"""jobber: one account per tenant, Jobber users mapped to resources

Revision ID: j0bbe0000016
Revises: f10000000010
Create Date: 2026-12-07 09:00:00+00:00

Issue #14 (ADR 0016). Additive only: one new table and two partial unique indexes that no existing row
can break (there were no Jobber connections before).

- `calendar_connections`: a Jobber connection keeps its account id in `calendar_id`; at most one per
  tenant, and an account belongs to one tenant (webhooks are routed by account id).
- `calendar_jobber_users`: a Jobber user mapped to a resource (their visits block it).
- Write-back records stay in `calendar_event_links` (`event_id` = "<request id> <assessment id>").
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "j0bbe0000016"
down_revision = "f10000000010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "uq_calendar_connections_jobber_tenant",
        "calendar_connections",
        ["tenant_id"],
        unique=True,
        postgresql_where=sa.text("provider = 'jobber'"),
    )
    op.create_index(
        "uq_calendar_connections_jobber_account",
        "calendar_connections",
        ["calendar_id"],
        unique=True,
        postgresql_where=sa.text("provider = 'jobber'"),
    )
    op.create_table(
        "calendar_jobber_users",
        sa.Column("connection_id", GUID(length=16), nullable=False),
        sa.Column("jobber_user_id", sa.String(length=255), nullable=False),
        sa.Column("tenant_id", GUID(length=16), nullable=False),
        sa.Column("resource_id", GUID(length=16), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("updated_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["calendar_connections.id"],
            name=op.f("fk_calendar_jobber_users_connection_id_calendar_connections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_calendar_jobber_users_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["sched_resources.id"],
            name=op.f("fk_calendar_jobber_users_resource_id_sched_resources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", "jobber_user_id", name=op.f("pk_calendar_jobber_users")),
    )
    op.create_index("ix_calendar_jobber_users_resource", "calendar_jobber_users", ["resource_id"])


def downgrade() -> None:
    op.drop_index("ix_calendar_jobber_users_resource", table_name="calendar_jobber_users")
    op.drop_table("calendar_jobber_users")
    op.drop_index("uq_calendar_connections_jobber_account", table_name="calendar_connections")
    op.drop_index("uq_calendar_connections_jobber_tenant", table_name="calendar_connections")

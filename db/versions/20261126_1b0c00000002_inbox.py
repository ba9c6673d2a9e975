"""inbox: two-way conversations, opt-out audit, phone facts, KPI facts, messaging settings

Revision ID: 1b0c00000002
Revises: 22724da3755b
Create Date: 2026-11-26 14:58:23.431091+00:00

Additive: new tables and nullable (or defaulted) columns. The current-thread unique index widens
from `status = 'open'` to `status IN ('open', 'opted_out')` (rows before this revision are all
`open`, so it holds for existing data); the inbox list index gains `id` for keyset pagination.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "1b0c00000002"
down_revision = "22724da3755b"
branch_labels = None
depends_on = None

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]
sa.JsonB = JsonB  # type: ignore[attr-defined]


def upgrade() -> None:
    op.create_table(
        "conv_phone_facts",
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("line_type", sa.String(length=30), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("checked_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_conv_phone_facts")),
    )
    op.create_table(
        "conv_kpi_facts",
        sa.Column("event_id", sa.GUID(length=16), nullable=False),
        sa.Column("metric", sa.String(length=30), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_conv_kpi_facts_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", "metric", name="pk_conv_kpi_facts"),
    )
    op.create_index("ix_conv_kpi_facts_tenant_occurred", "conv_kpi_facts", ["tenant_id", "occurred_at"], unique=False)
    op.create_table(
        "conv_opt_out_events",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.GUID(length=16), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["conv_messages.id"],
            name=op.f("fk_conv_opt_out_events_message_id_conv_messages"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_conv_opt_out_events_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conv_opt_out_events")),
    )
    op.create_index(
        "ix_conv_opt_out_events_tenant_phone", "conv_opt_out_events", ["tenant_id", "phone", "created_at"], unique=False
    )
    op.add_column("conv_messages", sa.Column("media", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("conv_settings", sa.Column("follow_up_template", sa.Text(), nullable=True))
    op.add_column("conv_settings", sa.Column("follow_up_delay_minutes", sa.Integer(), nullable=True))
    op.add_column("conv_settings", sa.Column("help_text", sa.Text(), nullable=True))
    op.add_column(
        "conv_settings",
        sa.Column("owner_alerts_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    op.add_column("conv_settings", sa.Column("owner_alert_number", sa.String(length=20), nullable=True))
    op.add_column("conv_threads", sa.Column("unread_count", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("conv_threads", sa.Column("last_message_preview", sa.String(length=160), nullable=True))
    op.add_column("conv_threads", sa.Column("last_inbound_at", sa.DateTimeUTC(timezone=True), nullable=True))
    op.add_column("conv_threads", sa.Column("last_alerted_at", sa.DateTimeUTC(timezone=True), nullable=True))
    op.add_column("conv_threads", sa.Column("follow_up_due_at", sa.DateTimeUTC(timezone=True), nullable=True))
    op.create_index(
        "uq_conv_threads_current_per_caller",
        "conv_threads",
        ["tenant_id", "caller"],
        unique=True,
        postgresql_where=sa.text("status IN ('open', 'opted_out')"),
    )
    op.create_index(
        "ix_conv_threads_tenant_activity_id", "conv_threads", ["tenant_id", "last_activity_at", "id"], unique=False
    )
    op.create_index(
        "ix_conv_threads_tenant_status_activity_id",
        "conv_threads",
        ["tenant_id", "status", "last_activity_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_conv_threads_tenant_unread_activity_id",
        "conv_threads",
        ["tenant_id", "last_activity_at", "id"],
        unique=False,
        postgresql_where=sa.text("unread_count > 0"),
    )
    op.create_index(
        "ix_conv_threads_follow_up_due",
        "conv_threads",
        ["follow_up_due_at"],
        unique=False,
        postgresql_where=sa.text("follow_up_due_at IS NOT NULL"),
    )
    op.drop_index("ix_conv_threads_tenant_activity", table_name="conv_threads")
    op.drop_index("uq_conv_threads_open_per_caller", table_name="conv_threads")


def downgrade() -> None:
    # Threads that are `opted_out` become `closed` first: the narrower index allows one open thread.
    op.execute("UPDATE conv_threads SET status = 'closed' WHERE status = 'opted_out'")
    op.create_index(
        "uq_conv_threads_open_per_caller",
        "conv_threads",
        ["tenant_id", "caller"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_index("ix_conv_threads_tenant_activity", "conv_threads", ["tenant_id", "last_activity_at"], unique=False)
    op.drop_index("ix_conv_threads_follow_up_due", table_name="conv_threads")
    op.drop_index("ix_conv_threads_tenant_unread_activity_id", table_name="conv_threads")
    op.drop_index("ix_conv_threads_tenant_status_activity_id", table_name="conv_threads")
    op.drop_index("ix_conv_threads_tenant_activity_id", table_name="conv_threads")
    op.drop_index("uq_conv_threads_current_per_caller", table_name="conv_threads")
    op.drop_column("conv_threads", "follow_up_due_at")
    op.drop_column("conv_threads", "last_alerted_at")
    op.drop_column("conv_threads", "last_inbound_at")
    op.drop_column("conv_threads", "last_message_preview")
    op.drop_column("conv_threads", "unread_count")
    op.drop_column("conv_settings", "owner_alert_number")
    op.drop_column("conv_settings", "owner_alerts_enabled")
    op.drop_column("conv_settings", "help_text")
    op.drop_column("conv_settings", "follow_up_delay_minutes")
    op.drop_column("conv_settings", "follow_up_template")
    op.drop_column("conv_messages", "media")
    op.drop_index("ix_conv_opt_out_events_tenant_phone", table_name="conv_opt_out_events")
    op.drop_table("conv_opt_out_events")
    op.drop_index("ix_conv_kpi_facts_tenant_occurred", table_name="conv_kpi_facts")
    op.drop_table("conv_kpi_facts")
    op.drop_table("conv_phone_facts")

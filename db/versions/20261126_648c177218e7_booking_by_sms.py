"""booking by SMS: each thread's booking dialog, and the job type callers book by text

Revision ID: 648c177218e7
Revises: e0e0e0000004
Create Date: 2026-11-26 17:24:08.831524+00:00

Additive: a new table and a nullable column.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "648c177218e7"
down_revision = "e0e0e0000004"
branch_labels = None
depends_on = None

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]
sa.JsonB = JsonB  # type: ignore[attr-defined]


def upgrade() -> None:
    op.create_table(
        "conv_booking_dialogs",
        sa.Column("thread_id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("state", sa.String(length=10), nullable=False),
        sa.Column("job_type_id", sa.GUID(length=16), nullable=True),
        sa.Column(
            "offers", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("hold_id", sa.GUID(length=16), nullable=True),
        sa.Column("hold_start", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("booking_id", sa.GUID(length=16), nullable=True),
        sa.Column("reprompts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_message_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_conv_booking_dialogs_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["conv_threads.id"],
            name=op.f("fk_conv_booking_dialogs_thread_id_conv_threads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("thread_id", name=op.f("pk_conv_booking_dialogs")),
    )
    op.create_index(
        "ix_conv_booking_dialogs_hold",
        "conv_booking_dialogs",
        ["hold_id"],
        unique=False,
        postgresql_where=sa.text("hold_id IS NOT NULL"),
    )
    op.add_column("conv_settings", sa.Column("booking_job_type_id", sa.GUID(length=16), nullable=True))
    op.create_foreign_key(
        op.f("fk_conv_settings_booking_job_type_id_sched_job_types"),
        "conv_settings",
        "sched_job_types",
        ["booking_job_type_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_conv_settings_booking_job_type_id_sched_job_types"), "conv_settings", type_="foreignkey"
    )
    op.drop_column("conv_settings", "booking_job_type_id")
    op.drop_index(
        "ix_conv_booking_dialogs_hold",
        table_name="conv_booking_dialogs",
        postgresql_where=sa.text("hold_id IS NOT NULL"),
    )
    op.drop_table("conv_booking_dialogs")

"""scheduling: resources, hours, job types, busy blocks, allocations (no-overlap exclusion), holds, bookings

Revision ID: 5c4ed0000001
Revises: 22724da3755b
Create Date: 2026-11-26 14:58:44.959250+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "5c4ed0000001"
down_revision = "22724da3755b"
branch_labels = None
depends_on = None

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]
sa.JsonB = JsonB  # type: ignore[attr-defined]


def upgrade() -> None:
    # The exclusion constraint needs btree_gist (the foundation migration installs it too).
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    op.create_table(
        "sched_job_types",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_before_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_after_minutes", sa.Integer(), nullable=False),
        sa.Column("min_notice_minutes", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint(
            "buffer_before_minutes >= 0 AND buffer_after_minutes >= 0",
            name=op.f("ck_sched_job_types_buffers_not_negative"),
        ),
        sa.CheckConstraint("duration_minutes > 0", name=op.f("ck_sched_job_types_duration_positive")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sched_job_types_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sched_job_types")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_sched_job_types_tenant_name"),
    )
    op.create_index(op.f("ix_sched_job_types_tenant_id"), "sched_job_types", ["tenant_id"], unique=False)
    op.create_table(
        "sched_resources",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("weekly_hours", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sched_resources_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sched_resources")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_sched_resources_tenant_name"),
    )
    op.create_index(op.f("ix_sched_resources_tenant_id"), "sched_resources", ["tenant_id"], unique=False)
    op.create_table(
        "sched_allocations",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("resource_id", sa.GUID(length=16), nullable=False),
        sa.Column("during", postgresql.TSTZRANGE(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        postgresql.ExcludeConstraint(
            (sa.column("resource_id"), "="),
            (sa.column("during"), "&&"),
            using="gist",
            name="ex_sched_allocations_no_overlap",
        ),
        sa.CheckConstraint(
            "(kind = 'hold') = (expires_at IS NOT NULL)", name=op.f("ck_sched_allocations_hold_expires")
        ),
        sa.CheckConstraint("kind IN ('hold', 'booking')", name=op.f("ck_sched_allocations_kind")),
        sa.CheckConstraint(
            "NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during)",
            name=op.f("ck_sched_allocations_during"),
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["sched_resources.id"],
            name=op.f("fk_sched_allocations_resource_id_sched_resources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sched_allocations_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sched_allocations")),
    )
    op.create_index(
        "ix_sched_allocations_hold_expiry",
        "sched_allocations",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("kind = 'hold'"),
    )
    op.create_index("ix_sched_allocations_tenant", "sched_allocations", ["tenant_id"], unique=False)
    op.create_table(
        "sched_busy_blocks",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("resource_id", sa.GUID(length=16), nullable=False),
        sa.Column("during", postgresql.TSTZRANGE(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint(
            "NOT isempty(during) AND NOT lower_inf(during) AND NOT upper_inf(during)",
            name=op.f("ck_sched_busy_blocks_during"),
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["sched_resources.id"],
            name=op.f("fk_sched_busy_blocks_resource_id_sched_resources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sched_busy_blocks_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sched_busy_blocks")),
        sa.UniqueConstraint("resource_id", "source", "external_id", name="uq_sched_busy_blocks_external"),
    )
    op.create_index(
        "ix_sched_busy_blocks_resource_during",
        "sched_busy_blocks",
        ["resource_id", "during"],
        unique=False,
        postgresql_using="gist",
    )
    op.create_index(op.f("ix_sched_busy_blocks_tenant_id"), "sched_busy_blocks", ["tenant_id"], unique=False)
    op.create_table(
        "sched_resource_exceptions",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("resource_id", sa.GUID(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("hours", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["sched_resources.id"],
            name=op.f("fk_sched_resource_exceptions_resource_id_sched_resources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_sched_resource_exceptions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sched_resource_exceptions")),
        sa.UniqueConstraint("resource_id", "day", name="uq_sched_resource_exceptions_resource_day"),
    )
    op.create_index(
        op.f("ix_sched_resource_exceptions_tenant_id"), "sched_resource_exceptions", ["tenant_id"], unique=False
    )
    op.create_table(
        "sched_bookings",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("resource_id", sa.GUID(length=16), nullable=False),
        sa.Column("job_type_id", sa.GUID(length=16), nullable=False),
        sa.Column("allocation_id", sa.GUID(length=16), nullable=True),
        sa.Column("hold_id", sa.GUID(length=16), nullable=True),
        sa.Column("starts_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("customer_phone", sa.String(length=20), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.String(length=500), nullable=True),
        sa.Column("cancelled_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "(status = 'confirmed') = (allocation_id IS NOT NULL)", name=op.f("ck_sched_bookings_confirmed_allocated")
        ),
        sa.CheckConstraint("status IN ('confirmed', 'cancelled')", name=op.f("ck_sched_bookings_status")),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_sched_bookings_ends_after_start")),
        sa.ForeignKeyConstraint(
            ["allocation_id"], ["sched_allocations.id"], name=op.f("fk_sched_bookings_allocation_id_sched_allocations")
        ),
        sa.ForeignKeyConstraint(
            ["job_type_id"], ["sched_job_types.id"], name=op.f("fk_sched_bookings_job_type_id_sched_job_types")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["sched_resources.id"], name=op.f("fk_sched_bookings_resource_id_sched_resources")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sched_bookings_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sched_bookings")),
        sa.UniqueConstraint("allocation_id", name=op.f("uq_sched_bookings_allocation_id")),
    )
    op.create_index("ix_sched_bookings_resource_starts", "sched_bookings", ["resource_id", "starts_at"], unique=False)
    op.create_index("ix_sched_bookings_tenant_starts", "sched_bookings", ["tenant_id", "starts_at"], unique=False)
    op.create_table(
        "sched_holds",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("resource_id", sa.GUID(length=16), nullable=False),
        sa.Column("job_type_id", sa.GUID(length=16), nullable=False),
        sa.Column("allocation_id", sa.GUID(length=16), nullable=False),
        sa.Column("starts_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("customer_phone", sa.String(length=20), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["allocation_id"],
            ["sched_allocations.id"],
            name=op.f("fk_sched_holds_allocation_id_sched_allocations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["job_type_id"],
            ["sched_job_types.id"],
            name=op.f("fk_sched_holds_job_type_id_sched_job_types"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["sched_resources.id"],
            name=op.f("fk_sched_holds_resource_id_sched_resources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sched_holds_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sched_holds")),
        sa.UniqueConstraint("allocation_id", name=op.f("uq_sched_holds_allocation_id")),
    )
    op.create_index("ix_sched_holds_expires_at", "sched_holds", ["expires_at"], unique=False)
    op.create_index("ix_sched_holds_tenant", "sched_holds", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_sched_holds_tenant", table_name="sched_holds")
    op.drop_index("ix_sched_holds_expires_at", table_name="sched_holds")
    op.drop_table("sched_holds")
    op.drop_index("ix_sched_bookings_tenant_starts", table_name="sched_bookings")
    op.drop_index("ix_sched_bookings_resource_starts", table_name="sched_bookings")
    op.drop_table("sched_bookings")
    op.drop_index(op.f("ix_sched_resource_exceptions_tenant_id"), table_name="sched_resource_exceptions")
    op.drop_table("sched_resource_exceptions")
    op.drop_index(op.f("ix_sched_busy_blocks_tenant_id"), table_name="sched_busy_blocks")
    op.drop_index("ix_sched_busy_blocks_resource_during", table_name="sched_busy_blocks", postgresql_using="gist")
    op.drop_table("sched_busy_blocks")
    op.drop_index("ix_sched_allocations_tenant", table_name="sched_allocations")
    op.drop_index(
        "ix_sched_allocations_hold_expiry", table_name="sched_allocations", postgresql_where=sa.text("kind = 'hold'")
    )
    op.drop_table("sched_allocations")
    op.drop_index(op.f("ix_sched_resources_tenant_id"), table_name="sched_resources")
    op.drop_table("sched_resources")
    op.drop_index(op.f("ix_sched_job_types_tenant_id"), table_name="sched_job_types")
    op.drop_table("sched_job_types")

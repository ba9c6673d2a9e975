"""calendars: connections, push channels, OAuth states, write-back links, counters

Revision ID: ca1e00000001
Revises: d13000000001
Create Date: 2026-12-03 09:00:00+00:00

Issue #11 (Google Calendar two-way sync), the `calendars` module's own tables. Additive only:
- `calendar_connections`: one resource's calendar at one provider (encrypted tokens, the sync cursor,
  status, last sync and error, the coalescing flag and the sync lease);
- `calendar_channels`: push channels (Google `events.watch`), several per connection while one is renewed;
- `calendar_oauth_states`: OAuth `state` nonces handed out and not yet used (single use);
- `calendar_event_links`: bookings written back to a connection's calendar;
- `calendar_counters`: `calendar_sync_errors_total` and the freeBusy fail-open count, observed in the
  jobs and worker processes and read by the web's `/metrics`.
Server defaults (now(), 0) serve the plain SQL that writes these rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision = "ca1e00000001"
down_revision = "d13000000001"
branch_labels = None
depends_on = None

sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]
sa.JsonB = JsonB  # type: ignore[attr-defined]


def upgrade() -> None:
    op.create_table(
        "calendar_counters",
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", "provider", name=op.f("pk_calendar_counters")),
    )
    op.create_table(
        "calendar_connections",
        sa.Column("id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("resource_id", sa.GUID(length=16), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("calendar_id", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=20), server_default=sa.text("'active'"), nullable=False),
        sa.Column("connected_by", sa.String(length=255), nullable=True),
        sa.Column("scopes", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=True),
        sa.Column("access_token_expires_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sync_token", sa.Text(), nullable=True),
        sa.Column("last_full_sync_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("last_synced_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("last_sync_attempt_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sync_requested_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sync_lease_until", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("last_error_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("reauth_notified_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("watch_attempted_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.Column("watch_error", sa.String(length=500), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'needs_reauth', 'error')", name=op.f("ck_calendar_connections_status")
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["sched_resources.id"],
            name=op.f("fk_calendar_connections_resource_id_sched_resources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_calendar_connections_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_connections")),
        sa.UniqueConstraint("resource_id", "provider", name="uq_calendar_connections_resource_provider"),
    )
    op.create_index("ix_calendar_connections_next_poll", "calendar_connections", ["next_poll_at"], unique=False)
    op.create_index("ix_calendar_connections_tenant", "calendar_connections", ["tenant_id"], unique=False)
    op.create_table(
        "calendar_oauth_states",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("resource_id", sa.GUID(length=16), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("calendar_id", sa.String(length=1024), nullable=False),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["sched_resources.id"],
            name=op.f("fk_calendar_oauth_states_resource_id_sched_resources"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_calendar_oauth_states_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_calendar_oauth_states")),
    )
    op.create_index("ix_calendar_oauth_states_expires_at", "calendar_oauth_states", ["expires_at"], unique=False)
    op.create_table(
        "calendar_channels",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("resource_id", sa.String(length=255), nullable=True),
        sa.Column("expires_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("stopped_at", sa.DateTimeUTC(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["calendar_connections.id"],
            name=op.f("fk_calendar_channels_connection_id_calendar_connections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_calendar_channels_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendar_channels")),
    )
    op.create_index(
        "ix_calendar_channels_connection", "calendar_channels", ["connection_id", "expires_at"], unique=False
    )
    op.create_table(
        "calendar_event_links",
        sa.Column("booking_id", sa.GUID(length=16), nullable=False),
        sa.Column("connection_id", sa.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.GUID(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=1024), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("state IN ('written', 'deleted', 'failed')", name=op.f("ck_calendar_event_links_state")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["calendar_connections.id"],
            name=op.f("fk_calendar_event_links_connection_id_calendar_connections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_calendar_event_links_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("booking_id", "connection_id", name=op.f("pk_calendar_event_links")),
    )
    op.create_index("ix_calendar_event_links_connection", "calendar_event_links", ["connection_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_calendar_event_links_connection", table_name="calendar_event_links")
    op.drop_table("calendar_event_links")
    op.drop_index("ix_calendar_channels_connection", table_name="calendar_channels")
    op.drop_table("calendar_channels")
    op.drop_index("ix_calendar_oauth_states_expires_at", table_name="calendar_oauth_states")
    op.drop_table("calendar_oauth_states")
    op.drop_index("ix_calendar_connections_tenant", table_name="calendar_connections")
    op.drop_index("ix_calendar_connections_next_poll", table_name="calendar_connections")
    op.drop_table("calendar_connections")
    op.drop_table("calendar_counters")

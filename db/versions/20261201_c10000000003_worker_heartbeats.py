"""worker heartbeats: outbox claims reclaimed from a dead worker

Revision ID: c10000000003
Revises: b10000000002
Create Date: 2026-12-01 16:00:00+00:00

Every worker process beats its row in `worker_heartbeats` each second; an outbox claim records its
worker (`claimed_by`), so a claim whose worker stopped beating is taken over within seconds instead of
after the 30 s lease, and a live worker's long dispatch is never taken from it. Additive: a nullable
column on both outbox tables (they keep the same columns) and a new table.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "c10000000003"
down_revision = "b10000000002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("outbox_events", "outbox_events_errors"):
        op.add_column(table, sa.Column("claimed_by", GUID(length=16), nullable=True))
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", GUID(length=16), nullable=False),
        sa.Column("process", sa.String(length=20), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("beat_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name=op.f("pk_worker_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
    for table in ("outbox_events", "outbox_events_errors"):
        op.drop_column(table, "claimed_by")

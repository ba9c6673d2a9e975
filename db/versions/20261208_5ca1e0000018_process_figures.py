"""process figures: every process's in-memory metrics and booking POST times, in Postgres

Revision ID: 5ca1e0000018
Revises: j0bbe0000016
Create Date: 2026-12-08 09:00:00+00:00

Issue #16 (ADR 0018). Additive only: two new tables of observability's.

- `obs_process_samples`: the Prometheus counters and histograms each process keeps in memory (request
  counts and durations, webhook dedupe hits, signature failures, booking conflicts), added up across
  processes and instances by the same flusher that writes provider figures (`value = value + delta`);
  the web's `/metrics` serves the totals.
- `obs_durations`: one row per booking POST (its handling time), kept 10 minutes, so
  `booking_post_p95_ms` is the percentile over every process's requests.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "5ca1e0000018"
down_revision = "j0bbe0000016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "obs_process_samples",
        sa.Column("sample", sa.String(length=120), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("family", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("help", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("value", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("sample", "labels", name=op.f("pk_obs_process_samples")),
    )
    op.create_table(
        "obs_durations",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("observed_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_obs_durations")),
    )
    op.create_index("ix_obs_durations_name_observed_at", "obs_durations", ["name", "observed_at"])


def downgrade() -> None:
    op.drop_index("ix_obs_durations_name_observed_at", table_name="obs_durations")
    op.drop_table("obs_durations")
    op.drop_table("obs_process_samples")

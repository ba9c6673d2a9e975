"""truthful metrics: first-SMS latency roll-up, deliberate holds, provider requests, maintenance runs

Revision ID: d13000000001
Revises: c10000000003
Create Date: 2026-12-02 09:00:00+00:00

Issue #13 ("metrics that tell the truth"). Additive only:
- `conv_messages.held_on_purpose`: the text waited on purpose (quiet hours, the operator's pause)
  before it was sent, so its latency is a decision and stays out of the first-SMS SLO;
- `conv_first_sms_latency` (conversations): the `first_sms_latency_seconds` histogram kept as sends
  happen (one upsert folded into the acceptance statement), never rescanned, untouched by retention.
  Backfilled here from the messages the database still holds;
- `obs_provider_requests`, `obs_provider_latency` (observability): provider request counts by
  outcome/status and latency buckets, flushed by the worker and jobs processes every few seconds and
  read by the web's `/metrics`;
- `obs_maintenance_runs` (observability): when each maintenance task (retention) last succeeded.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "d13000000001"
down_revision = "c10000000003"
branch_labels = None
depends_on = None

# The histogram's upper bounds in seconds (nmc.conversations.metrics.BUCKETS_SECONDS at this revision).
BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.04, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def upgrade() -> None:
    op.add_column(
        "conv_messages",
        sa.Column("held_on_purpose", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        "conv_first_sms_latency",
        sa.Column("le", sa.Float(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("held_on_purpose", sa.Boolean(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("sum_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("le", "shard", "held_on_purpose", name=op.f("pk_conv_first_sms_latency")),
    )
    bounds = ",".join(str(b) for b in BUCKETS)
    op.execute(
        f"""
        INSERT INTO conv_first_sms_latency (le, shard, held_on_purpose, count, sum_seconds)
        SELECT coalesce((SELECT min(b) FROM unnest('{{{bounds}}}'::float8[]) b WHERE b >= m.latency_ms / 1000.0),
                        'Infinity'::float8) AS le,
               0, false, count(*), sum(m.latency_ms) / 1000.0
        FROM conv_messages m
        WHERE m.kind = 'first_sms' AND m.latency_ms IS NOT NULL AND m.sent_at IS NOT NULL
        GROUP BY 1
        """
    )
    op.create_table(
        "obs_provider_requests",
        sa.Column("provider", sa.String(length=30), nullable=False),
        sa.Column("operation", sa.String(length=60), nullable=False),
        sa.Column("outcome", sa.String(length=30), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("provider", "operation", "outcome", "status", name=op.f("pk_obs_provider_requests")),
    )
    op.create_table(
        "obs_provider_latency",
        sa.Column("provider", sa.String(length=30), nullable=False),
        sa.Column("operation", sa.String(length=60), nullable=False),
        sa.Column("le", sa.Float(), nullable=False),
        sa.Column("count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("sum_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("provider", "operation", "le", name=op.f("pk_obs_provider_latency")),
    )
    op.create_table(
        "obs_maintenance_runs",
        sa.Column("task", sa.String(length=40), nullable=False),
        sa.Column("succeeded_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("task", name=op.f("pk_obs_maintenance_runs")),
    )


def downgrade() -> None:
    op.drop_table("obs_maintenance_runs")
    op.drop_table("obs_provider_latency")
    op.drop_table("obs_provider_requests")
    op.drop_table("conv_first_sms_latency")
    op.drop_column("conv_messages", "held_on_purpose")

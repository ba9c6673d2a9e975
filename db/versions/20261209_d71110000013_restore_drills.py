"""restore drills: each successful `just restore-drill`, recorded in the operator's database

Revision ID: d71110000013
Revises: 5ca1e0000018
Create Date: 2026-12-09 09:00:00+00:00

Issue #13 (runbook §8.3, §9). Additive only: one new table of observability's, `obs_restore_drills`, one
row per successful drill (when it finished, how long the restore and the whole drill took, the newest
event in the restore, where the snapshot came from — never its credentials). The drill restores into a
scratch database and drops it; this row goes into `DATABASE_URL`'s database, so the web's `/metrics`
serves `restore_drill_last_success_timestamp_seconds` and `RestoreDrillOverdue` can tell a missed month.
A row a month: retention leaves it alone (the history is the evidence the drills ran).
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "d71110000013"
down_revision = "5ca1e0000018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "obs_restore_drills",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("finished_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("restore_seconds", sa.Float(), nullable=False),
        sa.Column("total_seconds", sa.Float(), nullable=False),
        sa.Column("newest_event_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_obs_restore_drills")),
    )


def downgrade() -> None:
    op.drop_table("obs_restore_drills")

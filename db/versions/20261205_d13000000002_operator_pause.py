"""operator pause: the kill switch at runtime, beside the sending circuit in sms_sending_state

Revision ID: d13000000002
Revises: b111e0000001
Create Date: 2026-12-05 09:00:00+00:00

Issue #13: `just pause-sms` / `just resume-sms` hold every text without a restart. The pause is one
more reason to hold sending in the single-row `sms_sending_state` (messaging), read by the same
planning queries as the circuit: `paused_at` (NULL: not paused), `paused_by`, `pause_reason`, and
`suppressed_after_pause` (texts a resume suppressed for having waited longer than
PAUSE_MAX_AGE_MINUTES: the counter behind `sms_suppressed_after_pause_total`). Additive: nullable
columns and one with a constant default.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "d13000000002"
down_revision = "b111e0000001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sms_sending_state", sa.Column("paused_at", DateTimeUTC(timezone=True), nullable=True))
    op.add_column("sms_sending_state", sa.Column("paused_by", sa.String(length=100), nullable=True))
    op.add_column("sms_sending_state", sa.Column("pause_reason", sa.String(length=200), nullable=True))
    op.add_column(
        "sms_sending_state",
        sa.Column("suppressed_after_pause", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    for column in ("suppressed_after_pause", "pause_reason", "paused_by", "paused_at"):
        op.drop_column("sms_sending_state", column)

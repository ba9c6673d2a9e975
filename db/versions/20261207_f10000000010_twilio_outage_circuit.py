"""the sending circuit also opens on a Twilio outage (sustained 5xx/timeouts), not only on refused credentials

Revision ID: f10000000010
Revises: 0b0a4d000015
Create Date: 2026-12-07 09:00:00+00:00

Issue #10. Additive only: three columns of the one-row `sms_sending_state` (messaging's).

- `circuit_cause`: why the circuit is open — `account` (401/403, 20003…: a page at once) or
  `unavailable` (Twilio answered 5xx or nothing, several times in a row: texts wait without spending
  attempts; runbook §7.3). NULL while closed.
- `unavailable_count`, `unavailable_last_at`: the current run of 5xx/timeouts across every sender; a
  run ends when 30 s pass without one or when the circuit closes.
- `circuit_closed_at`: when it last closed; a request that started before then (one that hung through
  the outage) does not count towards a new run.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "f10000000010"
down_revision = "0b0a4d000015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sms_sending_state", sa.Column("circuit_cause", sa.String(20), nullable=True))
    op.add_column(
        "sms_sending_state", sa.Column("unavailable_count", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column("sms_sending_state", sa.Column("unavailable_last_at", DateTimeUTC(timezone=True), nullable=True))
    op.add_column("sms_sending_state", sa.Column("circuit_closed_at", DateTimeUTC(timezone=True), nullable=True))
    # A circuit open before this revision was opened by a refusal of our account.
    op.execute("UPDATE sms_sending_state SET circuit_cause = 'account' WHERE circuit_opened_at IS NOT NULL")


def downgrade() -> None:
    op.drop_column("sms_sending_state", "circuit_closed_at")
    op.drop_column("sms_sending_state", "unavailable_last_at")
    op.drop_column("sms_sending_state", "unavailable_count")
    op.drop_column("sms_sending_state", "circuit_cause")

"""Twilio refusals: the sending state (circuit breaker) and status callbacks that arrive before their SID

Revision ID: b10000000002
Revises: a10000000001
Create Date: 2026-12-01 16:00:00+00:00

Additive: two new tables.
- `sms_sending_state` (messaging): one row (id 1, inserted here) saying whether texts may go to Twilio
  at all; a refusal of our credentials or account opens its circuit, an accepted probe closes it. A
  missing row reads as closed. Issue #13's operator pause gets its own columns beside the circuit's.
- `conv_early_statuses` (conversations): a status callback for a SID no message carries yet, applied
  by the statement that records the SID; retention deletes rows older than 7 days.
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "b10000000002"
down_revision = "a10000000001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_sending_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("circuit_opened_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("circuit_http_status", sa.Integer(), nullable=True),
        sa.Column("circuit_code", sa.Integer(), nullable=True),
        sa.Column("circuit_reason", sa.String(length=200), nullable=True),
        sa.Column("circuit_probe_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("updated_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_sms_sending_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_sending_state")),
    )
    op.execute("INSERT INTO sms_sending_state (id) VALUES (1)")
    op.create_table(
        "conv_early_statuses",
        sa.Column("message_sid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("received_at", DateTimeUTC(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("message_sid", name=op.f("pk_conv_early_statuses")),
    )


def downgrade() -> None:
    op.drop_table("conv_early_statuses")
    op.drop_table("sms_sending_state")

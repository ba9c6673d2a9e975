"""edge bounds: columns that fit what providers may send

Revision ID: a10000000001
Revises: 7e1d00000006
Create Date: 2026-12-01 16:00:00+00:00

A caller's address is whatever Twilio sends as `From`: E.164, but also a SIP URI
(`sip:someone@example.sip.twilio.com`), `client:…` or a short code. Every column that stores one goes
from varchar(20) to varchar(255). Widening a varchar is a catalog change in Postgres (no rewrite, no
index rebuild). The downgrade narrows them again and fails, rather than truncating, when a longer
address has been stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a10000000001"
down_revision = "7e1d00000006"
branch_labels = None
depends_on = None

CALLER_COLUMNS = [
    ("conv_calls", "caller"),
    ("conv_threads", "caller"),
    ("conv_messages", "to_number"),
    ("conv_messages", "from_number"),
    ("conv_opt_outs", "phone"),
    ("conv_opt_out_events", "phone"),
    ("conv_phone_facts", "phone"),
]


def upgrade() -> None:
    for table, column in CALLER_COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=255), existing_type=sa.String(length=20))


def downgrade() -> None:
    for table, column in CALLER_COLUMNS:
        op.alter_column(table, column, type_=sa.String(length=20), existing_type=sa.String(length=255))

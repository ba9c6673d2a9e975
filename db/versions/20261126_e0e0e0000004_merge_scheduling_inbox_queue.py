"""Merge the scheduling, inbox and queue-notify branches into one head

Revision ID: e0e0e0000004
Revises: 5c4ed0000001, 1b0c00000002, 9a0c00000003
Create Date: 2026-11-26 16:00:00+00:00
"""

from __future__ import annotations

revision = "e0e0e0000004"
down_revision = ("5c4ed0000001", "1b0c00000002", "9a0c00000003")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

"""PgQueuer wakes workers on new jobs only

Revision ID: 9a0c00000003
Revises: 22724da3755b
Create Date: 2026-11-26 15:00:00+00:00

PgQueuer's trigger NOTIFYs on every INSERT, DELETE and TRUNCATE of the `pgqueuer` table, and every
consumer answers each NOTIFY with a dequeue query. Completed jobs are deleted in batches, so each
completion woke every consumer for nothing: on the first-SMS benchmark that doubled the dequeue
queries. New work only ever arrives by INSERT (our retries enqueue new jobs; deferred jobs are found
by PgQueuer's own timer), so the trigger now notifies on INSERT and TRUNCATE only. The payload is
unchanged (PgQueuer parses it).
"""

from __future__ import annotations

from alembic import op

revision = "9a0c00000003"
down_revision = "22724da3755b"
branch_labels = None
depends_on = None

_NOTIFY = """
CREATE OR REPLACE FUNCTION fn_pgqueuer_changed() RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'TRUNCATE') {extra} THEN
        PERFORM pg_notify(
            'ch_pgqueuer',
            json_build_object(
                'channel', 'ch_pgqueuer',
                'operation', lower(TG_OP),
                'sent_at', NOW(),
                'table', TG_TABLE_NAME,
                'type', 'table_changed_event'
            )::text
        );
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        RETURN NEW;
    ELSIF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.execute(_NOTIFY.format(extra=""))


def downgrade() -> None:
    op.execute(_NOTIFY.format(extra="OR TG_OP = 'DELETE'"))

"""PgQueuer's queue, log and statistics tables UNLOGGED, with PgQueuer's autovacuum settings (ADR 0020)

Revision ID: 1ea200000020
Revises: d71110000013
Create Date: 2026-12-10 09:00:00+00:00

Issue #16. Every PgQueuer job here is the wake-up of an outbox row (`outbox.dispatch`); the row is the
source of truth and the worker's sweep re-enqueues every undispatched row that is due, every 2 s. So the
`pgqueuer` table need not be WAL-logged: after a Postgres crash (or a failover: unlogged tables are
empty on a standby) it comes back empty and the sweep refills it within seconds. `pgqueuer_log` and
`pgqueuer_statistics` are PgQueuer's own per-job history, which nothing of ours reads. Each missed call
writes 9 rows to those tables (with 14 index entries per `pgqueuer` row): none of it is WAL-logged now.
`pgqueuer_schedules` (our cron rows) stays logged: PgQueuer's `balanced` durability plus the queue table.

SET UNLOGGED rewrites a table under an exclusive lock. The queue holds only live jobs (a few rows); the
log grows with every job and has never been pruned, so it is emptied first, which makes its rewrite
instant instead of blocking every enqueue for as long as it takes to copy the history.

PgQueuer's recommended autovacuum settings (its `optimize_autovacuum` DDL: the queue vacuumed after
1,000 dead rows instead of 20 % of the table, fillfactor 70) keep the dequeue's index scans short: every
finished job is a deleted row the dequeue walks past until a vacuum.
"""

from __future__ import annotations

from alembic import op

from nmc.db import execute_script
from nmc.queue.pgq import autovacuum_tuning_sql

revision = "1ea200000020"
down_revision = "d71110000013"
branch_labels = None
depends_on = None

UNLOGGED = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics")


def upgrade() -> None:
    # migration-check: destructive-ok PgQueuer's job history (pgqueuer_log), read by nothing of ours
    op.execute("TRUNCATE pgqueuer_log")
    for table in UNLOGGED:
        op.execute(f"ALTER TABLE {table} SET UNLOGGED")
    execute_script(autovacuum_tuning_sql()[0])


def downgrade() -> None:
    execute_script(autovacuum_tuning_sql()[1])
    for table in UNLOGGED:
        op.execute(f"ALTER TABLE {table} SET LOGGED")

"""Retention deletes of runbook §8, in small batches so no delete holds long locks."""

from __future__ import annotations

import json

import dramatiq
import psycopg
import structlog

from nmc.observability.maintenance import RECORD_SUCCESS_SQL, RETENTION
from nmc.queue.dramatiq import MAINTENANCE_QUEUE
from nmc.settings import get_settings

log = structlog.get_logger(module="retention")

BATCH = 5_000
# (table, condition)
RULES: tuple[tuple[str, str], ...] = (
    ("webhook_events", "received_at < now() - interval '90 days'"),
    ("outbox_events", "dispatched_at < now() - interval '30 days'"),
    ("conv_messages", "created_at < now() - interval '180 days'"),
    # Status callbacks whose SID was never recorded (conversations' `delivery.py`).
    ("conv_early_statuses", "received_at < now() - interval '7 days'"),
    # PgQueuer's per-job history (3 rows per text, read by nothing of ours; its statistics table keeps
    # the per-second counts): unpruned, it was the fastest-growing table (ADR 0020).
    ("pgqueuer_log", "created < now() - interval '7 days'"),
)


def purge_table(connection: psycopg.Connection, table: str, condition: str) -> int:
    """Delete every row of `table` matching `condition`, BATCH rows per transaction."""
    total = 0
    while True:
        with connection.transaction():
            deleted = connection.execute(
                f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {condition} LIMIT {BATCH})"
            ).rowcount
        total += deleted
        if deleted < BATCH:
            return total


def purge_expired() -> dict[str, int]:
    """Apply every rule; returns how many rows each table lost."""
    with psycopg.connect(get_settings().DATABASE_URL, autocommit=True) as connection:
        counts = {table: purge_table(connection, table, condition) for table, condition in RULES}
        connection.execute(RECORD_SUCCESS_SQL, (RETENTION, json.dumps(counts)))  # the "not run for 2 days" alert
    log.info("retention.purged", **counts)
    return counts


@dramatiq.actor(queue_name=MAINTENANCE_QUEUE, max_retries=5, time_limit=30 * 60 * 1000)
def purge_expired_rows() -> None:
    # Returns nothing: without a results backend Dramatiq warns on every run about a discarded value.
    purge_expired()

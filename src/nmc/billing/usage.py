"""Usage metering: every text Twilio accepted, as its segment count, reported to a Stripe Billing Meter.

Recording rides the statement that records the acceptance (`usage_cte`, published for conversations'
acceptance statements as kpis' `fact_cte` is): no extra round trip on the first-SMS path, and a usage
row exists exactly when the message is recorded accepted. Reporting is the jobs process's (`report_usage`,
a Dramatiq actor run every minute): unreported rows, oldest first, each sent as a meter event whose
`identifier` is the message id, so a retry after a lost answer is deduplicated by Stripe and never
bills twice. A Stripe outage stops the run at the first failure; the rows wait for the next one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import stripe
import structlog

from nmc.billing.stripe_api import BillingNotConfigured, stripe_client, transient
from nmc.settings import get_settings

log = structlog.get_logger(module="billing")

# Stripe takes meter events up to 35 days old; ours stop a day short to leave the run time.
OLDEST_REPORTABLE = timedelta(days=34)
CONCURRENCY = 8  # meter event requests in flight (Stripe allows 1,000/s in live mode)
REPORT_LOCK = 0x6E6D63_0001  # one reporter at a time, whichever jobs thread or process runs it
MAX_REFUSALS = 5  # a meter event Stripe refuses (not an outage) this often is settled as `refused`


def usage_cte(name: str, *, message_id: str, tenant_id: str, segments: str) -> str:
    """A `WITH name AS (INSERT ...)` recording one accepted text's usage, for an acceptance statement
    to prepend (the arguments are that statement's placeholders, e.g. `$1`; `segments` from
    `count_segments` of the body sent). Recording twice changes nothing."""
    return f"""{name} AS (
        INSERT INTO billing_usage (message_id, tenant_id, segments)
        VALUES ({message_id}, {tenant_id}, {segments})
        ON CONFLICT (message_id) DO NOTHING
    )"""


_RECORD = """
    INSERT INTO billing_usage (message_id, tenant_id, segments, occurred_at) VALUES ($1, $2, $3, coalesce($4, now()))
    ON CONFLICT (message_id) DO NOTHING
"""


async def record_usage(
    connection: asyncpg.Connection, message_id: UUID, tenant_id: UUID, segments: int, at: datetime | None = None
) -> None:
    """The same as `usage_cte`, as a statement of its own (tests, backfills)."""
    await connection.execute(_RECORD, message_id, tenant_id, segments, at)


@dataclass(frozen=True)
class Usage:
    texts: int
    segments: int
    since: datetime


_USAGE_SINCE = """
    SELECT count(*) AS texts, coalesce(sum(segments), 0) AS segments
    FROM billing_usage WHERE tenant_id = $1 AND occurred_at >= $2
"""


async def usage_since(connection: asyncpg.Connection, tenant_id: UUID, since: datetime) -> Usage:
    row = await connection.fetchrow(_USAGE_SINCE, tenant_id, since)
    return Usage(texts=row["texts"], segments=int(row["segments"]), since=since)


# ---------------------------------------------------------------- reporting (jobs process)
_UNREPORTED = """
    SELECT u.message_id, u.tenant_id, u.segments, u.occurred_at, u.attempts, b.stripe_customer_id
    FROM billing_usage u LEFT JOIN billing_accounts b ON b.tenant_id = u.tenant_id
    WHERE u.reported_at IS NULL
    ORDER BY u.occurred_at, u.message_id
    LIMIT $1
"""
_SETTLE = """
    UPDATE billing_usage u SET reported_at = now(), report_outcome = s.outcome, attempts = u.attempts + s.tried
    FROM unnest($1::uuid[], $2::text[], $3::int[]) AS s(message_id, outcome, tried)
    WHERE u.message_id = s.message_id
"""
_FAILED = """
    UPDATE billing_usage SET attempts = attempts + 1, last_error = left($2, 500) WHERE message_id = ANY($1::uuid[])
"""


@dataclass
class UsageReport:
    reported: int = 0
    duplicates: int = 0  # Stripe had the identifier already (an earlier answer was lost)
    not_billable: int = 0  # no Stripe customer (our own trial), or older than Stripe accepts
    failed: int = 0  # left for the next run
    error: str | None = None
    outcomes: dict[str, int] = field(default_factory=dict)


def duplicate_identifier(exc: stripe.StripeError) -> bool:
    """Stripe refusing an identifier it has seen (its uniqueness window is at least 24 h). Unconfirmed
    how it says so; both readings: an error code naming it, or a 400 whose message mentions it."""
    code = (exc.code or "").lower()
    message = str(exc.user_message or exc).lower()
    return code in {"resource_already_exists", "duplicate_meter_event", "meter_event_duplicate"} or (
        exc.http_status in (400, 409) and "identifier" in message and ("already" in message or "duplicate" in message)
    )


async def _send(client: stripe.StripeClient, event_name: str, row: asyncpg.Record) -> str:
    """`reported` or `duplicate`; raises what Stripe raised otherwise."""
    try:
        await client.v1.billing.meter_events.create_async(
            params={
                "event_name": event_name,
                "payload": {"stripe_customer_id": row["stripe_customer_id"], "value": str(row["segments"])},
                "identifier": str(row["message_id"]),
                "timestamp": int(row["occurred_at"].timestamp()),
            }
        )
    except stripe.StripeError as exc:
        if duplicate_identifier(exc):
            return "duplicate"
        raise
    return "reported"


async def report_batch(connection: asyncpg.Connection, client: stripe.StripeClient, batch: int) -> UsageReport:
    """One batch: settle what can be settled, stop at Stripe's first failure."""
    report = UsageReport()
    rows = await connection.fetch(_UNREPORTED, batch)
    settled: dict[UUID, tuple[str, int]] = {}
    oldest = datetime.now(UTC) - OLDEST_REPORTABLE
    to_send = []
    for row in rows:
        if row["stripe_customer_id"] is None:
            settled[row["message_id"]] = ("no_customer", 0)
        elif row["occurred_at"] < oldest:
            log.error("billing.usage_too_old", message_id=str(row["message_id"]), occurred_at=str(row["occurred_at"]))
            settled[row["message_id"]] = ("too_old", 0)
        else:
            to_send.append(row)
    event_name = get_settings().STRIPE_METER_EVENT_NAME
    gate = asyncio.Semaphore(CONCURRENCY)
    failures: list[tuple[UUID, str]] = []  # Stripe unavailable: the run stops
    refusals: list[tuple[UUID, str]] = []  # this event refused: retried next run, settled after MAX_REFUSALS

    async def one(row: asyncpg.Record) -> None:
        if failures:  # Stripe is failing: leave the rest for the next run
            return
        async with gate:
            if failures:
                return
            try:
                settled[row["message_id"]] = (await _send(client, event_name, row), 1)
            except stripe.StripeError as exc:
                error = f"{type(exc).__name__}: {exc.user_message or exc}"
                if transient(exc):
                    failures.append((row["message_id"], error))
                    return
                log.error("billing.meter_event_refused", message_id=str(row["message_id"]), error=error)
                if row["attempts"] + 1 >= MAX_REFUSALS:
                    settled[row["message_id"]] = ("refused", 1)
                else:
                    refusals.append((row["message_id"], error))

    await asyncio.gather(*(one(row) for row in to_send))
    if settled:
        ids = list(settled)
        await connection.execute(_SETTLE, ids, [settled[i][0] for i in ids], [settled[i][1] for i in ids])
    for message_id, error in failures + refusals:
        await connection.execute(_FAILED, [message_id], error)
    if failures:
        report.error = failures[0][1]
    for outcome, _ in settled.values():
        report.outcomes[outcome] = report.outcomes.get(outcome, 0) + 1
    report.reported = report.outcomes.get("reported", 0)
    report.duplicates = report.outcomes.get("duplicate", 0)
    report.not_billable = sum(report.outcomes.get(name, 0) for name in ("no_customer", "too_old", "refused"))
    report.failed = len(failures) + len(refusals)
    return report


async def report_usage(*, batch: int = 500, max_seconds: float = 50.0) -> UsageReport:
    """Report unreported usage until none is left, Stripe fails, or `max_seconds` pass (the next run
    continues). One reporter at a time (an advisory lock); without Stripe configured, nothing is done."""
    total = UsageReport()
    settings = get_settings()
    if not settings.BILLING_ENABLED:
        return total
    try:
        client = stripe_client(settings)
    except BillingNotConfigured:
        return total
    connection = await asyncpg.connect(settings.DATABASE_URL)
    try:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", REPORT_LOCK):
            log.info("billing.usage_report_already_running")
            return total
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            report = await report_batch(connection, client, batch)
            for name in ("reported", "duplicates", "not_billable", "failed"):
                setattr(total, name, getattr(total, name) + getattr(report, name))
            if report.error:
                total.error = report.error
                log.warning("billing.usage_report_interrupted", error=report.error, reported=total.reported)
                break
            if report.reported + report.duplicates + report.not_billable < batch:
                break
    finally:
        await connection.close()  # the advisory lock goes with the session
    if total.reported or total.duplicates or total.failed:
        log.info(
            "billing.usage_reported",
            reported=total.reported,
            duplicates=total.duplicates,
            not_billable=total.not_billable,
            failed=total.failed,
        )
    return total


def report_summary(report: UsageReport) -> dict[str, Any]:
    return {
        "reported": report.reported,
        "duplicates": report.duplicates,
        "not_billable": report.not_billable,
        "failed": report.failed,
        "error": report.error,
    }

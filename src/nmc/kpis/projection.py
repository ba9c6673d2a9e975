"""Lead KPIs as a projection of domain events: `conv_kpi_facts`, one row per event that counts.

| event              | fact          | value                      |
|--------------------|---------------|----------------------------|
| `call.missed`      | `missed_call` |                            |
| `sms.first_sent`   | `texted_back` | ms from webhook to Twilio  |
| `message.received` | `lead_reply`  | (only `first_reply`)       |
| `caller.opted_out` | `opt_out`     |                            |
| `booking.confirmed`| `booking`     |                            |

The subscribers write facts keyed by (event id, metric), so a redelivered event changes nothing. The
first SMS writes its two facts itself, in statements it runs anyway (`nmc.conversations.first_sms`,
through `fact_cte`, this module's published statement): the missed-call fact with its context query
(recorded whatever becomes of the text), the texted-back fact with the acceptance update, in the
transaction that publishes `sms.first_sent`. No round trip is added to that benchmarked path.
`nmc kpis rebuild` replays the history the outbox holds (parked events included) through `facts_of`.
`/api/kpis` aggregates facts over a range of the tenant's local days; medians and P95s come from the
`texted_back` values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from nmc.db import hot_transaction
from nmc.events import (
    BookingConfirmed,
    CallerOptedOut,
    CallMissed,
    DomainEvent,
    FirstSmsSent,
    MessageReceived,
    Unreadable,
    held_events,
    oldest_occurrence,
)

log = structlog.get_logger(module="kpis")


class Metric(StrEnum):
    MISSED_CALL = "missed_call"
    TEXTED_BACK = "texted_back"  # value: ms from webhook to Twilio's acceptance
    LEAD_REPLY = "lead_reply"
    BOOKING = "booking"
    OPT_OUT = "opt_out"


MISSED_CALL, TEXTED_BACK, LEAD_REPLY, BOOKING, OPT_OUT = Metric

Fact = tuple[str, float | None]
FACTS: dict[str, Callable[[Any], list[Fact]]] = {
    CallMissed.name: lambda event: [(MISSED_CALL, None)],
    FirstSmsSent.name: lambda event: [(TEXTED_BACK, event.latency_ms)],
    MessageReceived.name: lambda event: [(LEAD_REPLY, None)] if event.first_reply else [],
    CallerOptedOut.name: lambda event: [(OPT_OUT, None)],
    BookingConfirmed.name: lambda event: [(BOOKING, None)],
}

_FACT = """
    INSERT INTO conv_kpi_facts (event_id, metric, tenant_id, occurred_at, value) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT DO NOTHING
"""


def fact_cte(name: str, metric: Metric, *, event_id: str, tenant_id: str, occurred_at: str, value: str = "NULL") -> str:
    """A `WITH name AS (INSERT ...)` writing one fact, for a writer on the first-SMS path to prepend
    to a statement it runs anyway (the arguments are that statement's placeholders, e.g. `$4`)."""
    return f"""{name} AS (
        INSERT INTO conv_kpi_facts (event_id, metric, tenant_id, occurred_at, value)
        VALUES ({event_id}, '{metric}', {tenant_id}, {occurred_at}, {value})
        ON CONFLICT DO NOTHING
    )"""


def facts_of(event: DomainEvent) -> list[Fact]:
    builder = FACTS.get(event.name)
    return builder(event) if builder and event.tenant_id is not None else []


async def project_on(connection: asyncpg.Connection, event: DomainEvent) -> int:
    rows = [(event.event_id, metric, event.tenant_id, event.occurred_at, value) for metric, value in facts_of(event)]
    if rows:
        await connection.executemany(_FACT, rows)
    return len(rows)


async def project(event: DomainEvent) -> None:
    """The projection's subscriber (idempotent: facts are keyed by event id)."""
    async with hot_transaction() as connection:
        await project_on(connection, event)


# ---------------------------------------------------------------- rebuild from the outbox
@dataclass
class RebuildReport:
    everything: bool
    window_start: datetime | None = None
    events: int = 0
    facts: int = 0
    unreadable: int = 0

    def lines(self) -> list[str]:
        scope = (
            "all facts"
            if self.everything
            else f"facts from {self.window_start.isoformat()}"
            if self.window_start
            else "nothing (the outbox holds no projected events)"
        )
        return [
            f"rebuilt {scope}: {self.events} events replayed, {self.facts} facts written, "
            f"{self.unreadable} rows that no longer fit the catalog skipped"
        ]


REBUILD_BATCH = 1000


async def rebuild(*, everything: bool = False) -> RebuildReport:
    """Replay the event history into the projection, in one transaction (readers never see it half done).

    The outbox keeps rows 30 days after dispatch (runbook §8): by default only facts from the oldest
    projected event it still holds onwards are replaced, older facts stay. `everything` truncates first.
    """
    names = list(FACTS)
    report = RebuildReport(everything=everything)
    async with hot_transaction() as connection:
        if everything:
            await connection.execute("TRUNCATE conv_kpi_facts")
        else:
            report.window_start = await oldest_occurrence(connection, names)
            if report.window_start is None:
                return report
            await connection.execute("DELETE FROM conv_kpi_facts WHERE occurred_at >= $1", report.window_start)
        batch: list[tuple[Any, ...]] = []
        async for event in held_events(connection, names):
            if isinstance(event, Unreadable):
                report.unreadable += 1
                continue
            report.events += 1
            batch += [(event.event_id, m, event.tenant_id, event.occurred_at, v) for m, v in facts_of(event)]
            if len(batch) >= REBUILD_BATCH:
                await connection.executemany(_FACT, batch)
                report.facts += len(batch)
                batch = []
        if batch:
            await connection.executemany(_FACT, batch)
            report.facts += len(batch)
    log.info("kpis.rebuilt", events=report.events, facts=report.facts, unreadable=report.unreadable)
    return report


# ---------------------------------------------------------------- reading
@dataclass(frozen=True)
class KpiTotals:
    missed_calls: int
    texted_back: int
    median_ms: float | None
    p95_ms: float | None
    replies: int
    bookings: int
    opt_outs: int


_TOTALS = f"""
    SELECT count(*) FILTER (WHERE metric = '{MISSED_CALL}') AS missed_calls,
           count(*) FILTER (WHERE metric = '{TEXTED_BACK}') AS texted_back,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY value) FILTER (WHERE metric = '{TEXTED_BACK}') AS median_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FILTER (WHERE metric = '{TEXTED_BACK}') AS p95_ms,
           count(*) FILTER (WHERE metric = '{LEAD_REPLY}') AS replies,
           count(*) FILTER (WHERE metric = '{BOOKING}') AS bookings,
           count(*) FILTER (WHERE metric = '{OPT_OUT}') AS opt_outs
    FROM conv_kpi_facts
    WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
"""


def local_day_bounds(start: date, end: date, timezone: str) -> tuple[datetime, datetime]:
    """[start 00:00, the day after end 00:00) in the tenant's zone (DST-correct), as aware datetimes."""
    zone = ZoneInfo(timezone)
    return (
        datetime.combine(start, time.min, tzinfo=zone),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone),
    )


async def totals(connection: asyncpg.Connection, tenant_id: UUID, since: datetime, until: datetime) -> KpiTotals:
    row = await connection.fetchrow(_TOTALS, tenant_id, since, until)
    return KpiTotals(
        missed_calls=row["missed_calls"],
        texted_back=row["texted_back"],
        median_ms=row["median_ms"],
        p95_ms=row["p95_ms"],
        replies=row["replies"],
        bookings=row["bookings"],
        opt_outs=row["opt_outs"],
    )

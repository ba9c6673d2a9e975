"""Outbox health and process heartbeats, read from Postgres at scrape time (runbook §5, §7.2).

`outbox_dispatch_lag_seconds` is the age of the oldest outbox event that should have been dispatched
by now and was not: every undispatched row counts, from its `created_at`, whether it is due, leased by
a dispatcher or waiting out a backoff after failures (an event that keeps failing is lag, not health),
except a deliberate deferral (`last_error` = 'deferred: <reason>': quiet hours, the pause, the sending
circuit, a rate limit), which counts only once it falls due again, from its `available_at`. 0 when
nothing waits. Runbook §12's "Outbox lag" query counts every undispatched row from `created_at`,
deferrals included: it answers "what is still in the outbox", this metric "what is late".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.events.dispatcher import deferral_note
from nmc.observability.metrics import scrape_time_probe

DEFERRED_PATTERN = deferral_note("%")  # 'deferred: %'
PROCESSES = ("worker", "jobs")  # the processes that beat `worker_heartbeats`
ALIVE_WITHIN_SECONDS = 5  # as the dispatcher's HEARTBEAT_STALE_SECONDS: older is dead

_OUTBOX_HEALTH = text(
    f"""
    SELECT coalesce(greatest(extract(epoch FROM now() - min(
               CASE WHEN last_error LIKE '{DEFERRED_PATTERN}' THEN available_at ELSE created_at END
           ) FILTER (WHERE NOT (coalesce(last_error LIKE '{DEFERRED_PATTERN}', false)
                                AND available_at > now()))), 0), 0) AS lag,
           count(*) AS pending,
           count(*) FILTER (WHERE available_at > now() AND last_error IS NOT NULL
                            AND last_error NOT LIKE '{DEFERRED_PATTERN}') AS in_backoff,
           (SELECT count(*) FROM outbox_events_errors) AS parked
    FROM outbox_events WHERE dispatched_at IS NULL
    """
)
_HEARTBEATS = text(
    f"""
    SELECT process, extract(epoch FROM now() - max(beat_at)) AS age,
           count(*) FILTER (WHERE beat_at > now() - interval '{ALIVE_WITHIN_SECONDS} seconds') AS alive
    FROM worker_heartbeats GROUP BY process
    """
)


@scrape_time_probe
async def outbox_health(session: AsyncSession) -> Iterable[Metric]:
    row = (await session.execute(_OUTBOX_HEALTH)).one()
    return [
        GaugeMetricFamily(
            "outbox_dispatch_lag_seconds",
            "Age of the oldest undispatched outbox event that is due, leased or backing off after failures "
            "(deliberate deferrals count only once due again); 0 when nothing waits",
            value=float(row.lag),
        ),
        GaugeMetricFamily("outbox_events_pending", "Outbox events not yet dispatched", value=row.pending),
        GaugeMetricFamily(
            "outbox_events_in_backoff",
            "Undispatched outbox events waiting to be retried after a failure",
            value=row.in_backoff,
        ),
        GaugeMetricFamily("outbox_events_parked", "Rows in outbox_events_errors", value=row.parked),
    ]


@scrape_time_probe
async def process_heartbeats(session: AsyncSession) -> Iterable[Metric]:
    """Worker and jobs processes beat `worker_heartbeats` every second (a clean stop deletes the row)."""
    rows = {row.process: row for row in (await session.execute(_HEARTBEATS))}
    alive = GaugeMetricFamily(
        "process_instances_alive",
        f"Processes of each kind whose heartbeat is under {ALIVE_WITHIN_SECONDS} s old",
        labels=["process"],
    )
    age = GaugeMetricFamily(
        "process_heartbeat_age_seconds",
        "Seconds since the newest heartbeat of each kind of process (absent when none has a row)",
        labels=["process"],
    )
    for process in sorted({*PROCESSES, *rows}):
        row = rows.get(process)
        alive.add_metric([process], row.alive if row else 0)
        if row is not None:
            age.add_metric([process], max(float(row.age), 0.0))
    return [alive, age]


@dataclass(frozen=True)
class Overdue:
    count: int
    oldest_seconds: float | None


_OVERDUE = text(
    """
    SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS oldest
    FROM outbox_events
    WHERE event_name = :name AND dispatched_at IS NULL
      AND created_at < now() - make_interval(secs => :seconds)
      AND NOT coalesce(last_error = ANY(CAST(:held AS text[])), false)
    """
)


async def overdue_events(session: AsyncSession, event_name: str, seconds: float, held_for: Iterable[str]) -> Overdue:
    """Undispatched `event_name` events created more than `seconds` ago, except those deferred for one of
    the reasons `held_for` (a subscriber's deliberate waits): the owner of the subscriber says which."""
    row = (
        await session.execute(
            _OVERDUE, {"name": event_name, "seconds": seconds, "held": [deferral_note(r) for r in held_for]}
        )
    ).one()
    return Overdue(count=row.n, oldest_seconds=None if row.oldest is None else float(row.oldest))

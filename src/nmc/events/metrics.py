"""Outbox health read from Postgres at scrape time (runbook §5, §7.2)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.observability.metrics import scrape_time_probe

_OUTBOX_HEALTH = text(
    """
    SELECT coalesce(extract(epoch FROM now() - min(available_at) FILTER (WHERE available_at <= now())), 0) AS lag,
           count(*) AS pending,
           (SELECT count(*) FROM outbox_events_errors) AS parked
    FROM outbox_events WHERE dispatched_at IS NULL
    """
)


@scrape_time_probe
async def outbox_health(session: AsyncSession) -> Iterable[Metric]:
    row = (await session.execute(_OUTBOX_HEALTH)).one()
    return [
        GaugeMetricFamily(
            "outbox_dispatch_lag_seconds",
            "How long the oldest due outbox event has waited to be dispatched (0 when none is due); "
            "events deferred on purpose (quiet hours, backoff, paused sending) count from when they fall due",
            value=float(row.lag),
        ),
        GaugeMetricFamily("outbox_events_pending", "Outbox events not yet dispatched", value=row.pending),
        GaugeMetricFamily("outbox_events_parked", "Rows in outbox_events_errors", value=row.parked),
    ]

"""When each maintenance task last succeeded (`obs_maintenance_runs`), for the "retention not run for
2 days" alert: `maintenance_last_success_timestamp_seconds{task}` (absent until the first success)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.observability.metrics import scrape_time_probe

RETENTION = "retention"

# psycopg placeholders: (task, detail as JSON text)
RECORD_SUCCESS_SQL = """
    INSERT INTO obs_maintenance_runs (task, succeeded_at, detail) VALUES (%s, now(), %s::jsonb)
    ON CONFLICT (task) DO UPDATE SET succeeded_at = now(), detail = EXCLUDED.detail
"""
_LAST_SUCCESS = text("SELECT task, extract(epoch FROM succeeded_at) AS at FROM obs_maintenance_runs")


@scrape_time_probe
async def maintenance_runs(session: AsyncSession) -> Iterable[Metric]:
    family = GaugeMetricFamily(
        "maintenance_last_success_timestamp_seconds",
        "When each maintenance task (retention) last succeeded, Unix time",
        labels=["task"],
    )
    for row in await session.execute(_LAST_SUCCESS):
        family.add_metric([row.task], float(row.at))
    return [family]

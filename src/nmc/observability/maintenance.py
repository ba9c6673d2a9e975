"""When each maintenance task last succeeded (`obs_maintenance_runs`), for the "retention not run for
2 days" alert: `maintenance_last_success_timestamp_seconds{task}` (absent until the first success); and
the last successful restore drill (`obs_restore_drills`, runbook §8.3) for `RestoreDrillOverdue`:
`restore_drill_last_success_timestamp_seconds` and its restore time (absent until the first drill)."""

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


# asyncpg placeholders: (restore seconds, total seconds, newest event or NULL, source without credentials)
RECORD_RESTORE_DRILL_SQL = """
    INSERT INTO obs_restore_drills (finished_at, restore_seconds, total_seconds, newest_event_at, source)
    VALUES (now(), $1, $2, $3, left($4, 200))
    RETURNING finished_at
"""
_LAST_DRILL = text(
    "SELECT extract(epoch FROM finished_at) AS at, restore_seconds FROM obs_restore_drills"
    " ORDER BY finished_at DESC LIMIT 1"
)


@scrape_time_probe
async def restore_drills(session: AsyncSession) -> Iterable[Metric]:
    last_success = GaugeMetricFamily(
        "restore_drill_last_success_timestamp_seconds",
        "When `just restore-drill` last succeeded against this database, Unix time (absent: never)",
    )
    restore_seconds = GaugeMetricFamily(
        "restore_drill_last_restore_seconds", "How long the last successful drill's restore took (absent: never)"
    )
    if (row := (await session.execute(_LAST_DRILL)).first()) is not None:
        last_success.add_metric([], float(row.at))
        restore_seconds.add_metric([], float(row.restore_seconds))
    return [last_success, restore_seconds]

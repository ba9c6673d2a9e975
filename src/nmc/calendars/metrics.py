"""Calendar figures for the web's `/metrics`, read from Postgres at scrape time (they are observed in the
jobs process, and in the worker for an SMS booking's live check, which have no scrape port):

- `calendar_sync_errors_total{provider}` (runbook §5, alert §6): every failed sync, channel or write-back,
  0 per provider from the start so the alert's `increase()` has a series;
- `calendar_freebusy_fail_open_total{provider}`: live checks that got no answer in time (the booking went
  ahead on the synced state);
- `calendar_push_channels_expiring_unrenewed{provider}`: active connections whose newest push channel
  expires within 24 h (renewal starts two days before: this counts renewals failing for a day);
- `calendar_connections{provider, status}`.

A count is one upsert in its own transaction (`calendar_counters`): failures are rare, and a count must
survive the failed work's rollback.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.calendars import store
from nmc.calendars.models import PROVIDERS, ConnectionStatus
from nmc.db import raw_connection, session_scope
from nmc.observability.metrics import scrape_time_probe

SYNC_ERRORS = "sync_errors"
FREEBUSY_FAIL_OPEN = "freebusy_fail_open"


async def count(name: str, provider: str) -> None:
    async with session_scope() as session:
        await store.count(await raw_connection(session), name, provider)


_COUNTERS = text("SELECT name, provider, count AS n FROM calendar_counters")
_EXPIRING = text(
    """
    SELECT c.provider, count(*) AS n FROM calendar_connections c
    JOIN LATERAL (SELECT max(expires_at) AS expires_at FROM calendar_channels ch
                  WHERE ch.connection_id = c.id AND ch.stopped_at IS NULL) AS newest ON true
    WHERE c.status = 'active' AND newest.expires_at IS NOT NULL AND newest.expires_at < now() + interval '24 hours'
    GROUP BY c.provider
    """
)
_CONNECTIONS = text("SELECT provider, status, count(*) AS n FROM calendar_connections GROUP BY provider, status")


@scrape_time_probe
async def calendar_figures(session: AsyncSession) -> Iterable[Metric]:
    counters = {(row.name, row.provider): row.n for row in await session.execute(_COUNTERS)}
    errors = CounterMetricFamily(
        "calendar_sync_errors", "Calendar syncs, push channels and write-backs that failed", labels=["provider"]
    )
    fail_open = CounterMetricFamily(
        "calendar_freebusy_fail_open",
        "Live calendar checks before a hold or booking that got no answer in time (booked on the synced state)",
        labels=["provider"],
    )
    for provider in PROVIDERS:
        errors.add_metric([provider], counters.get((SYNC_ERRORS, provider), 0))
        fail_open.add_metric([provider], counters.get((FREEBUSY_FAIL_OPEN, provider), 0))
    expiring_rows = {row.provider: row.n for row in await session.execute(_EXPIRING)}
    expiring = GaugeMetricFamily(
        "calendar_push_channels_expiring_unrenewed",
        "Active connections whose newest push channel expires within 24 h (renewal failing)",
        labels=["provider"],
    )
    for provider in PROVIDERS:
        expiring.add_metric([provider], expiring_rows.get(provider, 0))
    by_status = {(row.provider, row.status): row.n for row in await session.execute(_CONNECTIONS)}
    connections = GaugeMetricFamily(
        "calendar_connections", "Calendar connections by status", labels=["provider", "status"]
    )
    for provider in PROVIDERS:
        for status in ConnectionStatus:
            connections.add_metric([provider, status], by_status.get((provider, status), 0))
    return [errors, fail_open, expiring, connections]

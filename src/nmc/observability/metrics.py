"""The runbook §5 metrics, served by the web's `/metrics` as the total of every process and instance.

Nothing is served from one process's memory (ADR 0018): what the worker and jobs observe (first-SMS
latency, outbox lag, calendar sync errors) is read from Postgres at scrape time, and the counters each
process keeps in memory (webhook dedupe hits, signature failures, booking conflicts, request counts)
are flushed to Postgres and summed there (`process_figures.py`), so a scrape of any web process of any
instance reports the same totals, and an SLO alert survives restarts.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Iterable, Iterator

import structlog
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.observability.flusher import flush_now
from nmc.settings import get_settings

log = structlog.get_logger(module="observability")

WEBHOOK_DEDUPE_HITS = Counter("webhook_dedupe_hits_total", "Webhook deliveries recognised as retries", ["provider"])
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "webhook_signature_failures_total", "Webhook requests refused for a bad signature", ["provider"]
)
SCHEDULING_BOOK_CONFLICTS = Counter(
    "scheduling_book_conflict_total", "Booking or hold attempts refused because the slot was taken"
)

# `calendar_sync_errors_total{provider}` is observed in the jobs process: `nmc.calendars.metrics` serves it
# from Postgres (a scrape-time probe), 0 per provider from the start. `booking_post_p95_ms`:
# `nmc.scheduling.metrics`, over every web process's booking POSTs.

Probe = Callable[[AsyncSession], Awaitable[Iterable[Metric]]]
_PROBES: list[Probe] = []


def scrape_time_probe(probe: Probe) -> Probe:
    """Register an async function that reads figures from Postgres at scrape time."""
    if probe not in _PROBES:
        _PROBES.append(probe)
    return probe


class ScrapeTimeFigures(Collector):
    """Serves the families the probes produced at the last refresh."""

    def __init__(self) -> None:
        self._families: list[Metric] = []

    async def refresh(self, session: AsyncSession) -> None:
        families: list[Metric] = []
        for probe in _PROBES:
            try:
                families.extend(await probe(session))
            except Exception as exc:  # one broken probe must not blank the whole scrape
                log.warning("metrics.probe_failed", probe=probe.__name__, error=str(exc))
                await session.rollback()
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


SCRAPE_TIME_FIGURES = ScrapeTimeFigures()
# What /metrics serves: only the Postgres-derived figures. The in-process counters stay in the default
# registry, where the flusher reads them (and tests of one process may too).
EXPORTED = CollectorRegistry(auto_describe=False)
EXPORTED.register(SCRAPE_TIME_FIGURES)


class MetricsController(Controller):
    """Litestar's Prometheus exposition, with the Postgres-derived figures refreshed first."""

    path = "/metrics"
    include_in_schema = False

    @get()
    async def metrics(self, request: Request, db_session: NamedDependency[AsyncSession]) -> Response[bytes]:
        if not scrape_allowed(request.headers.get("authorization", "")):
            return Response(
                b"metrics: bearer token required\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Content-Type": "text/plain"},
            )
        await asyncio.to_thread(flush_now)  # this process's own increments first
        await SCRAPE_TIME_FIGURES.refresh(db_session)
        # As a header, not `media_type`: Litestar would append a second `charset` to a text/* media type,
        # and a repeated parameter makes the Content-Type invalid for Prometheus 3's scraper.
        return Response(generate_latest(EXPORTED), headers={"Content-Type": CONTENT_TYPE_LATEST})


def scrape_allowed(authorization: str) -> bool:
    """With `METRICS_TOKEN` set (production), a scrape must send `Authorization: Bearer <token>`."""
    token = get_settings().METRICS_TOKEN
    if not token:
        return True
    scheme, _, presented = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


# Database saturation (runbook §6: connections > 80% for 10 minutes). The database's CPU is not visible
# from SQL: Render shows it on the database's Metrics page (docs/runbook.md §6). Its proxy here: backends
# running a statement and waiting on nothing (no wait event: on a CPU or queued for one), every backend
# type, the scrape's own excepted — against the plan's CPUs (DATABASE_CPUS) in the DbCpuBusy alert.
_DATABASE = text(
    """
    SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS in_use,
           count(*) FILTER (WHERE backend_type = 'client backend' AND state = 'active') AS active,
           count(*) FILTER (WHERE backend_type = 'client backend' AND state LIKE 'idle in transaction%')
               AS idle_in_transaction,
           count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting_on_locks,
           count(*) FILTER (WHERE state = 'active' AND wait_event IS NULL AND pid <> pg_backend_pid()) AS on_cpu,
           coalesce(extract(epoch FROM now() - min(xact_start) FILTER (WHERE backend_type = 'client backend'
                                                                     AND pid <> pg_backend_pid())), 0)
               AS oldest_transaction,
           current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
               AS max_connections
    FROM pg_stat_activity
    """
)


def _database_cpus() -> list[Metric]:
    cpus = get_settings().DATABASE_CPUS
    return [GaugeMetricFamily("db_cpus", "The database plan's CPUs (DATABASE_CPUS)", value=cpus)] if cpus else []


@scrape_time_probe
async def database_saturation(session: AsyncSession) -> Iterable[Metric]:
    row = (await session.execute(_DATABASE)).one()
    return [
        GaugeMetricFamily(
            "db_connections_in_use", "Client connections open on the server (every role)", value=row.in_use
        ),
        GaugeMetricFamily(
            "db_connections_max",
            "Connections clients may open: max_connections less superuser_reserved_connections",
            value=row.max_connections,
        ),
        GaugeMetricFamily("db_connections_active", "Client connections running a statement", value=row.active),
        GaugeMetricFamily(
            "db_connections_idle_in_transaction",
            "Client connections idle inside a transaction",
            value=row.idle_in_transaction,
        ),
        GaugeMetricFamily("db_lock_waits", "Backends waiting for a lock (runbook §7.6)", value=row.waiting_on_locks),
        GaugeMetricFamily(
            "db_backends_on_cpu",
            "Backends running a statement with no wait event (on a CPU or queued for one), this scrape's excepted",
            value=row.on_cpu,
        ),
        *_database_cpus(),
        GaugeMetricFamily(
            "db_oldest_transaction_seconds",
            "Age of the oldest open transaction of another client",
            value=float(row.oldest_transaction),
        ),
    ]

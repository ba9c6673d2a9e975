"""The runbook §5 metrics.

Counters that only the web increments (webhook dedupe hits, signature failures, booking conflicts)
live in this process. What the worker and jobs observe (first-SMS latency, outbox lag, calendar sync
errors) is read from Postgres when `/metrics` is scraped, so an SLO alert survives restarts and
hosts with no scrape port.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator

import structlog
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(module="observability")

WEBHOOK_DEDUPE_HITS = Counter("webhook_dedupe_hits_total", "Webhook deliveries recognised as retries", ["provider"])
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "webhook_signature_failures_total", "Webhook requests refused for a bad signature", ["provider"]
)
SCHEDULING_BOOK_CONFLICTS = Counter(
    "scheduling_book_conflict_total", "Booking or hold attempts refused because the slot was taken"
)

CALENDAR_SYNC_ERRORS = Counter("calendar_sync_errors_total", "Calendar sync runs that failed", ["provider"])
BOOKING_POST_P95_MS = Gauge(
    "booking_post_p95_ms", "P95 of POST /api/bookings handling time over the last 10 minutes, in ms"
)

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
REGISTRY.register(SCRAPE_TIME_FIGURES)


class MetricsController(Controller):
    """Litestar's Prometheus exposition, with the Postgres-derived figures refreshed first."""

    path = "/metrics"
    include_in_schema = False

    @get()
    async def metrics(self, db_session: NamedDependency[AsyncSession]) -> Response[bytes]:
        await SCRAPE_TIME_FIGURES.refresh(db_session)
        # As a header, not `media_type`: Litestar would append a second `charset` to a text/* media type,
        # and a repeated parameter makes the Content-Type invalid for Prometheus 3's scraper.
        return Response(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

"""`booking_post_p95_ms` (runbook §5, alert above 500 ms for 10 minutes): P95 of booking POST handling
time over a rolling 10-minute window, over every web process of every instance. Each request's time is
kept as a row (`obs_durations`, written by the process's metrics flusher), and the percentile is taken
over the rows when `/metrics` is scraped (ADR 0018): never an average of per-process percentiles."""

from __future__ import annotations

import time
from collections.abc import Iterable

from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.observability.metrics import scrape_time_probe
from nmc.observability.process_figures import duration_percentile, observe_duration

BOOKING_POST = "booking_post"


@scrape_time_probe
async def booking_post_p95(session: AsyncSession) -> Iterable[Metric]:
    p95 = await duration_percentile(session, BOOKING_POST, 95)
    return [
        GaugeMetricFamily(
            "booking_post_p95_ms", "P95 of POST /api/bookings handling time over the last 10 minutes, in ms", value=p95
        )
    ]


def booking_post_timer(app: ASGIApp) -> ASGIApp:
    """Route middleware on POST /api/bookings: from the handler's start (after authentication) until
    the response is sent — handler, SQL, commit and serialization; 201s, 409s and 4xx alike."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            observe_duration(BOOKING_POST, (time.perf_counter() - started) * 1000)

    return middleware

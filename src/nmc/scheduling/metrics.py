"""`booking_post_p95_ms` (runbook §5, alert above 500 ms for 10 minutes): P95 of booking POST handling
time in this web process over a rolling 10-minute window, computed when `/metrics` is scraped."""

from __future__ import annotations

import math
import time
from collections import deque

from litestar.types import ASGIApp, Receive, Scope, Send

from nmc.observability.metrics import BOOKING_POST_P95_MS

WINDOW_SECONDS = 600.0
MAX_SAMPLES = 500_000  # a memory bound far above any real 10-minute booking volume of one process


class RollingPercentile:
    """Samples of the last `window` seconds; percentiles by nearest rank over what is left."""

    def __init__(self, window: float = WINDOW_SECONDS, max_samples: int = MAX_SAMPLES) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def observe(self, value: float, now: float | None = None) -> None:
        self._samples.append((time.monotonic() if now is None else now, value))

    def percentile(self, q: float, now: float | None = None) -> float:
        cutoff = (time.monotonic() if now is None else now) - self.window
        while self._samples and self._samples[0][0] < cutoff:
            self._samples.popleft()
        if not self._samples:
            return 0.0
        ordered = sorted(value for _, value in self._samples)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    def clear(self) -> None:
        self._samples.clear()


BOOKING_POST_TIMES_MS = RollingPercentile()
BOOKING_POST_P95_MS.set_function(lambda: BOOKING_POST_TIMES_MS.percentile(95))


def booking_post_timer(app: ASGIApp) -> ASGIApp:
    """Route middleware on POST /api/bookings: from the handler's start (after authentication) until
    the response is sent — handler, SQL, commit and serialization; 201s, 409s and 4xx alike."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            BOOKING_POST_TIMES_MS.observe((time.perf_counter() - started) * 1000)

    return middleware

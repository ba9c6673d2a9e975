"""Provider request metrics (runbook §5 "Provider error rates", §7.1 step 2, §7.3), observed where the
requests are made and exported by the web's `/metrics`.

The worker and jobs processes make the provider requests but have no scrape port, and on Render each
process is a separate service on its own host, so Postgres carries them (`flusher.py`, ADR 0018):
`observe_request` adds to in-memory counters (a dict increment under a lock), the process's flusher
thread writes the increments with one upsert per table (`count = count + delta`), and the web reads
the rows when scraped.

Families: `provider_requests_total{provider, operation, outcome, status}` and
`provider_request_duration_seconds{provider, operation}` (histogram).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Iterable

import structlog
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.observability.flusher import FLUSHER, Connect, flushed_to_postgres, start_flusher
from nmc.observability.metrics import scrape_time_probe

log = structlog.get_logger(module="observability")

BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INF = float("inf")

# outcome values: one vocabulary for every provider
OK = "ok"
CLIENT_ERROR = "client_error"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
NETWORK_ERROR = "network_error"


def status_outcome(status: int) -> str:
    if status == 429:
        return RATE_LIMITED
    if status >= 500:
        return SERVER_ERROR
    if status >= 400:
        return CLIENT_ERROR
    return OK


def failure_outcome(exc: BaseException) -> str:
    """A request that got no HTTP answer: timed out, or the connection failed."""
    return TIMEOUT if isinstance(exc, TimeoutError) else NETWORK_ERROR


RequestKey = tuple[str, str, str, str]  # provider, operation, outcome, status
LatencyKey = tuple[str, str, float]  # provider, operation, le


class ProviderStats:
    """This process's increments not yet written to Postgres."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[RequestKey, int] = defaultdict(int)
        self._latency: dict[LatencyKey, list[float]] = defaultdict(lambda: [0, 0.0])

    def observe(self, provider: str, operation: str, outcome: str, status: int | None, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS_SECONDS, seconds)
        le = BUCKETS_SECONDS[index] if index < len(BUCKETS_SECONDS) else INF
        with self._lock:
            self._requests[(provider, operation, outcome, str(status) if status else "none")] += 1
            bucket = self._latency[(provider, operation, le)]
            bucket[0] += 1
            bucket[1] += seconds

    def pending(self) -> bool:
        return bool(self._requests)

    def drain(self) -> tuple[dict[RequestKey, int], dict[LatencyKey, list[float]]]:
        with self._lock:
            requests, latency = dict(self._requests), dict(self._latency)
            self._requests.clear()
            self._latency.clear()
        return requests, latency

    def restore(self, requests: dict[RequestKey, int], latency: dict[LatencyKey, list[float]]) -> None:
        """Put back increments a failed flush did not write."""
        with self._lock:
            for key, n in requests.items():
                self._requests[key] += n
            for lkey, (count, total) in latency.items():
                bucket = self._latency[lkey]
                bucket[0] += count
                bucket[1] += total


STATS = ProviderStats()

# Rows in key order: two processes flushing at once lock the same rows in the same order (no deadlock).
_UPSERT_REQUESTS = """
    INSERT INTO obs_provider_requests AS t (provider, operation, outcome, status, count)
    SELECT * FROM unnest({columns}) ORDER BY 1, 2, 3, 4
    ON CONFLICT (provider, operation, outcome, status)
    DO UPDATE SET count = t.count + EXCLUDED.count, updated_at = now()
"""
_REQUEST_TYPES = ("text", "text", "text", "text", "bigint")
_UPSERT_LATENCY = """
    INSERT INTO obs_provider_latency AS t (provider, operation, le, count, sum_seconds)
    SELECT * FROM unnest({columns}) ORDER BY 1, 2, 3
    ON CONFLICT (provider, operation, le)
    DO UPDATE SET count = t.count + EXCLUDED.count, sum_seconds = t.sum_seconds + EXCLUDED.sum_seconds
"""
_LATENCY_TYPES = ("text", "text", "float8", "bigint", "float8")


def _statements(placeholder: str) -> list[tuple[str, tuple[str, ...]]]:
    """Both upserts with `placeholder.format(i)` for the i-th array parameter."""
    return [
        (sql.format(columns=", ".join(f"CAST({placeholder.format(i)} AS {t}[])" for i, t in enumerate(types))), types)
        for sql, types in ((_UPSERT_REQUESTS, _REQUEST_TYPES), (_UPSERT_LATENCY, _LATENCY_TYPES))
    ]


_PSYCOPG_STATEMENTS = [sql for sql, _ in _statements("%s")]


def _columns(requests: dict[RequestKey, int], latency: dict[LatencyKey, list[float]]) -> list[list[list[object]]]:
    """Each table's rows as one list per column (for `unnest`), in key order."""
    request_rows = sorted((*key, n) for key, n in requests.items())
    latency_rows = sorted((*key, int(v[0]), v[1]) for key, v in latency.items())
    return [[list(column) for column in zip(*rows, strict=True)] for rows in (request_rows, latency_rows)]


def flush_sync(connection: object) -> int:
    """Write this process's increments with a psycopg connection (the flusher thread). Returns rows written."""
    requests, latency = STATS.drain()
    if not requests:
        return 0
    try:
        with connection.transaction():  # type: ignore[attr-defined]
            for sql, columns in zip(_PSYCOPG_STATEMENTS, _columns(requests, latency), strict=True):
                connection.execute(sql, columns)  # type: ignore[attr-defined]
    except BaseException:
        STATS.restore(requests, latency)
        raise
    return len(requests)


@flushed_to_postgres
def _flush_pending(connect: Connect) -> int:
    return flush_sync(connect()) if STATS.pending() else 0


def observe_request(provider: str, operation: str, outcome: str, status: int | None, seconds: float) -> None:
    """Count one provider request (cheap: no I/O here; the flusher thread writes it to Postgres)."""
    STATS.observe(provider, operation, outcome, status, seconds)
    if not FLUSHER.running:
        start_flusher()


class Timer:
    """`started = Timer()` before a request, `started.seconds` after it."""

    __slots__ = ("_started",)

    def __init__(self) -> None:
        self._started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._started


_REQUESTS = text("SELECT provider, operation, outcome, status, count AS n FROM obs_provider_requests")
_LATENCY = text("SELECT provider, operation, le, count AS n, sum_seconds FROM obs_provider_latency")


@scrape_time_probe
async def provider_requests(session: AsyncSession) -> Iterable[Metric]:
    requests = CounterMetricFamily(
        "provider_requests",
        "Requests to providers (Twilio, …) from every process, by outcome and HTTP status",
        labels=["provider", "operation", "outcome", "status"],
    )
    for row in await session.execute(_REQUESTS):
        requests.add_metric([row.provider, row.operation, row.outcome, row.status], row.n)
    per_operation: dict[tuple[str, str], list[tuple[float, int, float]]] = defaultdict(list)
    for row in await session.execute(_LATENCY):
        per_operation[(row.provider, row.operation)].append((row.le, int(row.n), float(row.sum_seconds)))
    duration = HistogramMetricFamily(
        "provider_request_duration_seconds",
        "Provider request latency, from sending the request to reading the answer (or failing)",
        labels=["provider", "operation"],
    )
    for (provider, operation), rows in sorted(per_operation.items()):
        buckets = [(str(bound), sum(n for le, n, _ in rows if le <= bound)) for bound in BUCKETS_SECONDS]
        buckets.append(("+Inf", sum(n for _, n, _ in rows)))
        duration.add_metric([provider, operation], buckets, sum(total for _, _, total in rows))
    return [requests, duration]

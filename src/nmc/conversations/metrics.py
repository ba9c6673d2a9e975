"""First-SMS latency (webhook received → Messages API accepted), read from Postgres at scrape time.

The worker records each first SMS's latency on its message row, so the SLO figure survives restarts
and is visible on the web's `/metrics` although the worker has no port to scrape.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.observability.metrics import scrape_time_probe

SLO_WINDOW = "10 minutes"  # runbook §6: alert when the P95 is above 5 s for 10 minutes
BUCKETS_SECONDS = (0.005, 0.01, 0.015, 0.025, 0.04, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_P95 = text(
    f"""
    SELECT coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), 0) / 1000.0 AS p95,
           count(*) AS n
    FROM conv_messages
    WHERE kind = 'first_sms' AND sent_at > now() - interval '{SLO_WINDOW}' AND latency_ms IS NOT NULL
    """
)
_BUCKET_COLUMNS = ", ".join(
    f"count(*) FILTER (WHERE latency_ms <= {bound * 1000}) AS b{i}" for i, bound in enumerate(BUCKETS_SECONDS)
)
_HISTOGRAM = text(
    f"""
    SELECT {_BUCKET_COLUMNS}, count(*) AS total, coalesce(sum(latency_ms), 0) / 1000.0 AS total_seconds
    FROM conv_messages
    WHERE kind = 'first_sms' AND latency_ms IS NOT NULL AND sent_at IS NOT NULL
    """
)


@scrape_time_probe
async def first_sms_latency(session: AsyncSession) -> Iterable[Metric]:
    p95 = (await session.execute(_P95)).one()
    histogram = (await session.execute(_HISTOGRAM)).one()
    buckets = [(str(bound), histogram[i]) for i, bound in enumerate(BUCKETS_SECONDS)]
    buckets.append(("+Inf", histogram.total))
    return [
        GaugeMetricFamily(
            "slo_first_sms_p95_seconds",
            f"P95 of first-SMS latency over the last {SLO_WINDOW} (webhook received → Twilio accepted)",
            value=float(p95.p95),
        ),
        HistogramMetricFamily(
            "first_sms_latency_seconds",
            "First-SMS latency, webhook received → Twilio accepted",
            buckets=buckets,
            sum_value=float(histogram.total_seconds),
        ),
    ]

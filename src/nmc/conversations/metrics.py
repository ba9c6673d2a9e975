"""First-SMS figures for `/metrics`, read from Postgres at scrape time (the worker has no port to scrape).

- `slo_first_sms_p95_seconds`: P95 of first-SMS latency (webhook received → Twilio accepted) over the
  last 10 minutes, over texts sent without a deliberate wait (`held_on_purpose`: quiet hours, the
  operator's pause — decisions, not slowness). NaN when no text was sent in the window: no sample is
  not "0 s". Exact (percentile over the window's rows, through the partial index on `sent_at`).
- `first_sms_latency_seconds`: the same population as a histogram, from the roll-up the acceptance
  statement keeps (`conv_first_sms_latency`, `LATENCY_ROLLUP_CTE`): a scrape reads a few rows, and the
  counts never go backwards when retention deletes messages. Texts that waited on purpose are counted
  in `first_sms_held_on_purpose_total`.
- `first_sms_overdue_calls`: missed calls whose `call.missed` event is still undispatched more than the
  SLO (5 s) after it was written, except while the text waits on purpose: a dead worker, a Twilio
  outage (5xx, timeouts, the sending circuit) or a rate limit shows here even when nothing is sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.events import CallMissed, overdue_events
from nmc.messaging import PAUSED_REASON, QUIET_HOURS_REASON
from nmc.observability.metrics import scrape_time_probe

SLO_SECONDS = 5.0  # runbook: first SMS P95 ≤ 5 s
SLO_WINDOW = "10 minutes"  # runbook §6: alert when the P95 is above 5 s for 10 minutes
BUCKETS_SECONDS = (0.005, 0.01, 0.015, 0.025, 0.04, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ROLLUP_SHARDS = 8
# Deferral reasons that are decisions, not slowness (billing's `not_entitled` joins them when it lands).
DELIBERATE_WAITS = (PAUSED_REASON, QUIET_HOURS_REASON)

_BOUNDS = ",".join(str(bound) for bound in BUCKETS_SECONDS)


def latency_rollup_cte(name: str, *, message_id: str, latency_ms: str) -> str:
    """A `name AS (INSERT ...)` adding one accepted first SMS to `conv_first_sms_latency`, for the
    acceptance statement to prepend (the arguments are its placeholders). Counted once: only while the
    message has no `sent_at` yet (the CTE reads the row as it was before the statement's UPDATE)."""
    return f"""{name} AS (
        INSERT INTO conv_first_sms_latency AS r (le, shard, held_on_purpose, count, sum_seconds)
        SELECT coalesce((SELECT min(b) FROM unnest('{{{_BOUNDS}}}'::float8[]) b
                         WHERE b >= {latency_ms}::float8 / 1000.0), 'Infinity'::float8),
               floor(random() * {ROLLUP_SHARDS})::smallint, m.held_on_purpose, 1, {latency_ms}::float8 / 1000.0
        FROM conv_messages m WHERE m.id = {message_id} AND m.sent_at IS NULL
        ON CONFLICT (le, shard, held_on_purpose)
        DO UPDATE SET count = r.count + 1, sum_seconds = r.sum_seconds + EXCLUDED.sum_seconds
    )"""


_P95 = text(
    f"""
    SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) / 1000.0 AS p95, count(*) AS n
    FROM conv_messages
    WHERE kind = 'first_sms' AND sent_at > now() - interval '{SLO_WINDOW}' AND latency_ms IS NOT NULL
      AND NOT held_on_purpose
    """
)
_ROLLUP = text(
    """
    SELECT le, held_on_purpose, sum(count) AS n, sum(sum_seconds) AS total
    FROM conv_first_sms_latency GROUP BY le, held_on_purpose
    """
)


@scrape_time_probe
async def first_sms_latency(session: AsyncSession) -> Iterable[Metric]:
    p95 = (await session.execute(_P95)).one()
    rows = (await session.execute(_ROLLUP)).all()
    prompt = [row for row in rows if not row.held_on_purpose]
    buckets = [(str(bound), sum(int(row.n) for row in prompt if row.le <= bound)) for bound in BUCKETS_SECONDS]
    buckets.append(("+Inf", sum(int(row.n) for row in prompt)))
    held = CounterMetricFamily(
        "first_sms_held_on_purpose",
        "First SMS sent after a deliberate wait (quiet hours, the operator's pause): outside the SLO",
        value=sum(int(row.n) for row in rows if row.held_on_purpose),
    )
    return [
        GaugeMetricFamily(
            "slo_first_sms_p95_seconds",
            f"P95 of first-SMS latency over the last {SLO_WINDOW} (webhook received → Twilio accepted), "
            "texts held on purpose excluded; NaN when none was sent",
            value=float(p95.p95) if p95.n else math.nan,
        ),
        GaugeMetricFamily("slo_first_sms_samples", f"First SMS in the SLO window (last {SLO_WINDOW})", value=p95.n),
        HistogramMetricFamily(
            "first_sms_latency_seconds",
            "First-SMS latency, webhook received → Twilio accepted (texts held on purpose excluded)",
            buckets=buckets,
            sum_value=float(sum(float(row.total) for row in prompt)),
        ),
        held,
    ]


@scrape_time_probe
async def first_sms_overdue(session: AsyncSession) -> Iterable[Metric]:
    overdue = await overdue_events(session, CallMissed.name, SLO_SECONDS, DELIBERATE_WAITS)
    return [
        GaugeMetricFamily(
            "first_sms_overdue_calls",
            f"Missed calls with no first-SMS outcome {SLO_SECONDS:g} s after the webhook "
            "(call.missed undispatched, not held on purpose)",
            value=overdue.count,
        ),
        GaugeMetricFamily(
            "first_sms_overdue_oldest_seconds",
            "Age of the oldest overdue missed call (0 when none)",
            value=overdue.oldest_seconds or 0.0,
        ),
    ]

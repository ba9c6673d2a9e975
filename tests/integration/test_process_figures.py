"""Figures kept in one process's memory are served as the total of every process (issue #16, ADR 0018).

"Another process" here is a real one: `python -c` importing nmc, counting, and flushing into the same
database, as a second web process or a worker would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import asyncpg
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nmc.observability.metrics import SCHEDULING_BOOK_CONFLICTS, WEBHOOK_DEDUPE_HITS
from nmc.observability.process_figures import observe_duration
from tests.conftest import PROJECT_ROOT
from tests.integration.test_observability import sample_value


def in_another_process(code: str) -> None:
    """Run `code` in a new interpreter with nmc imported, then flush its figures as a stopping process does."""
    script = (
        textwrap.dedent(
            """
        from nmc.observability import process_figures
        from nmc.observability.flusher import flush_now
        from nmc.observability.metrics import SCHEDULING_BOOK_CONFLICTS, WEBHOOK_DEDUPE_HITS
        from nmc.observability.process_figures import observe_duration
        """
        )
        + textwrap.dedent(code)
        + "\nassert flush_now() > 0\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


async def scrape(client: AsyncTestClient[Litestar]) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


async def test_counters_of_every_process_add_up(client: AsyncTestClient[Litestar], db: asyncpg.Connection) -> None:
    before = await scrape(client)  # flushes what earlier tests left in this process's counters
    dedupe = sample_value(before, "webhook_dedupe_hits_total", provider="twilio") or 0.0
    conflicts = sample_value(before, "scheduling_book_conflict_total") or 0.0

    WEBHOOK_DEDUPE_HITS.labels(provider="twilio").inc(2)
    SCHEDULING_BOOK_CONFLICTS.inc()
    in_another_process(
        """
        WEBHOOK_DEDUPE_HITS.labels(provider="twilio").inc(3)
        SCHEDULING_BOOK_CONFLICTS.inc(4)
        """
    )
    text = await scrape(client)
    assert sample_value(text, "webhook_dedupe_hits_total", provider="twilio") == dedupe + 5
    assert sample_value(text, "scheduling_book_conflict_total") == conflicts + 5
    # a second scrape writes nothing twice
    assert sample_value(await scrape(client), "webhook_dedupe_hits_total", provider="twilio") == dedupe + 5


async def test_names_on_call_alerts_on_are_served_before_anything_happened(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    await db.execute("TRUNCATE obs_process_samples")
    text = await scrape(client)
    assert "# TYPE webhook_dedupe_hits_total counter" in text
    assert sample_value(text, "scheduling_book_conflict_total") is not None
    assert "process_cpu_seconds_total" not in text  # one process's CPU is no figure of the service


async def test_booking_post_p95_is_the_percentile_over_every_process(
    client: AsyncTestClient[Litestar], db: asyncpg.Connection
) -> None:
    """1..50 ms here, 51..100 ms in another process: the P95 of the 100 is 95 ms (an average of each
    process's own P95, 48 and 98, would say 73)."""
    await db.execute("TRUNCATE obs_durations")
    for ms in range(1, 51):
        observe_duration("booking_post", float(ms))
    in_another_process("for ms in range(51, 101):\n    observe_duration('booking_post', float(ms))")
    # older than the 10-minute window: not counted
    await db.execute(
        "INSERT INTO obs_durations (name, observed_at, ms) VALUES ('booking_post', now() - interval '11 minutes', 9999)"
    )
    assert sample_value(await scrape(client), "booking_post_p95_ms") == 95.0

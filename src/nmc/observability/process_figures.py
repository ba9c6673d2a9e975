"""What each process counts in memory, served as the total of every process and instance.

The in-process Prometheus counters and histograms (`nmc_requests_total`, `nmc_request_duration_seconds`
from Litestar's middleware; `webhook_dedupe_hits_total`, `webhook_signature_failures_total`,
`scheduling_book_conflict_total`) stay in the default registry where the code increments them. The
flusher (`flusher.py`) writes each sample's increase since its last flush to `obs_process_samples`
(`value = value + delta`), and `/metrics` serves the summed rows, never this process's own fragment.
prometheus_client's `process_*` and `python_*` collectors (this process's CPU, memory, GC) mean nothing
summed across processes and are left out.

Handling times whose percentile is wanted (`booking_post_p95_ms`) are kept as rows (`obs_durations`,
the last `DURATION_WINDOW_SECONDS`), so the percentile is taken over every process's requests, not
averaged from per-process percentiles.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.observability.flusher import Connect, flushed_to_postgres
from nmc.observability.metrics import scrape_time_probe

SUMMED_KINDS = ("counter", "histogram")
PER_PROCESS_PREFIXES = ("process_", "python_")
DURATION_WINDOW_SECONDS = 600.0

SampleKey = tuple[str, str]  # sample name, labels as sorted JSON
SampleRow = tuple[str, str, str, str, str, float]  # sample, labels, family, kind, help, delta


def labels_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def summed_families(registry: CollectorRegistry = REGISTRY) -> Iterator[Metric]:
    for family in registry.collect():
        if family.type in SUMMED_KINDS and not family.name.startswith(PER_PROCESS_PREFIXES):
            yield family


class ProcessSamples:
    """This process's samples as last written: the next flush writes only what grew since."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._written: dict[SampleKey, float] = {}

    def drain(self) -> list[SampleRow]:
        rows: list[SampleRow] = []
        with self._lock:
            for family in summed_families(self._registry):
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    key = (sample.name, labels_key(sample.labels))
                    delta = sample.value - self._written.get(key, 0.0)
                    if delta:
                        self._written[key] = sample.value
                        rows.append((*key, family.name, family.type, family.documentation, delta))
        return rows

    def restore(self, rows: list[SampleRow]) -> None:
        """A failed write: those increments are written by the next flush."""
        with self._lock:
            for sample, labels, *_, delta in rows:
                self._written[(sample, labels)] -= delta


SAMPLES = ProcessSamples()

# Rows in key order: two processes flushing at once lock the same rows in the same order (no deadlock).
_UPSERT_SAMPLES = """
    INSERT INTO obs_process_samples AS t (sample, labels, family, kind, help, value)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[])
    ORDER BY 1, 2
    ON CONFLICT (sample, labels) DO UPDATE SET value = t.value + EXCLUDED.value, updated_at = now()
"""


@flushed_to_postgres
def flush_samples(connect: Connect) -> int:
    rows = SAMPLES.drain()
    if not rows:
        return 0
    try:
        connect().execute(_UPSERT_SAMPLES, [list(column) for column in zip(*sorted(rows), strict=True)])
    except BaseException:
        SAMPLES.restore(rows)
        raise
    return len(rows)


class Durations:
    """Handling times not yet written, by name (`booking_post`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[str, float, float]] = []  # name, unix time, ms

    def observe(self, name: str, ms: float) -> None:
        with self._lock:
            self._pending.append((name, time.time(), ms))

    def drain(self) -> list[tuple[str, float, float]]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

    def restore(self, rows: list[tuple[str, float, float]]) -> None:
        with self._lock:
            self._pending[:0] = rows


DURATIONS = Durations()

_INSERT_DURATIONS = """
    INSERT INTO obs_durations (name, observed_at, ms)
    SELECT name, to_timestamp(at), ms FROM unnest(%s::text[], %s::float8[], %s::float8[]) AS d(name, at, ms)
"""
_FORGET_DURATIONS = "DELETE FROM obs_durations WHERE observed_at < now() - make_interval(secs => %s)"


def observe_duration(name: str, ms: float) -> None:
    """One handling time (cheap: the flusher writes it)."""
    DURATIONS.observe(name, ms)


@flushed_to_postgres
def flush_durations(connect: Connect) -> int:
    rows = DURATIONS.drain()
    if not rows:
        return 0
    try:
        connection = connect()
        with connection.transaction():
            connection.execute(_INSERT_DURATIONS, [list(column) for column in zip(*rows, strict=True)])
            connection.execute(_FORGET_DURATIONS, [DURATION_WINDOW_SECONDS])
    except BaseException:
        DURATIONS.restore(rows)
        raise
    return len(rows)


_PERCENTILE = text(
    """
    SELECT percentile_disc(:q) WITHIN GROUP (ORDER BY ms) FROM obs_durations
    WHERE name = :name AND observed_at > now() - make_interval(secs => :window)
    """
)


async def duration_percentile(session: AsyncSession, name: str, q: float) -> float:
    """The q-th percentile (nearest rank) of `name`'s handling times over the window, from every process;
    0 when there were none."""
    value = await session.scalar(_PERCENTILE, {"q": q / 100, "name": name, "window": DURATION_WINDOW_SECONDS})
    return float(value or 0.0)


_SAMPLES = text("SELECT sample, labels, family, kind, help, value FROM obs_process_samples")


def _bucket_order(sample: str, labels: dict[str, str]) -> tuple[Any, ...]:
    le = labels.get("le")
    bound = math.inf if le in (None, "+Inf") else float(le)  # type: ignore[arg-type]
    return (labels_key({k: v for k, v in labels.items() if k != "le"}), sample, bound)


@scrape_time_probe
async def summed_samples(session: AsyncSession) -> Iterable[Metric]:
    """Every family the code defines (this process's registry: the names on-call alerts on are there
    before anything happened) with the totals of every process."""
    families: dict[str, Metric] = {}
    for local in summed_families():
        families[local.name] = Metric(local.name, local.documentation, local.type)
        if local.type == "counter":  # an unlabelled counter reads 0 before its first increment anywhere
            for sample in local.samples:
                if not sample.labels and sample.name.endswith("_total"):
                    families[local.name].add_sample(sample.name, {}, 0.0)
    rows: dict[str, list[tuple[str, dict[str, str], float]]] = defaultdict(list)
    for row in await session.execute(_SAMPLES):
        family = families.setdefault(row.family, Metric(row.family, row.help, row.kind))
        rows[family.name].append((row.sample, json.loads(row.labels), float(row.value)))
    for name, samples in rows.items():
        family = families[name]
        family.samples = []  # the rows cover every sample, the placeholder zero too
        for sample_name, labels, value in sorted(samples, key=lambda s: _bucket_order(s[0], s[1])):
            family.add_sample(sample_name, labels, value)
    return list(families.values())

"""Observability's own tables: figures the worker and jobs processes observe, for the web's `/metrics`.

- `obs_provider_requests` / `obs_provider_latency`: provider request counts by outcome and status, and
  latency buckets (`providers.py` flushes each process's increments every few seconds);
- `obs_maintenance_runs`: when each maintenance task (retention) last succeeded;
- `obs_process_samples`: every process's in-memory Prometheus counters and histograms, added up
  (`process_figures.py`; issue #16);
- `obs_durations`: booking POST handling times of the last 10 minutes, from every web process;
- `obs_restore_drills`: every successful `just restore-drill` (runbook §8.3), for `RestoreDrillOverdue`.

Counters only grow: rows are upserted with `count = count + delta`, never deleted by retention.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Float, Identity, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column


class ProviderRequests(DefaultBase):
    __tablename__ = "obs_provider_requests"

    provider: Mapped[str] = mapped_column(String(30), primary_key=True)  # twilio, later stripe, google, jobber
    operation: Mapped[str] = mapped_column(String(60), primary_key=True)  # messages.create, messages.list, ...
    # accepted | refused | rate_limited | server_error | timeout | network_error
    outcome: Mapped[str] = mapped_column(String(30), primary_key=True)
    status: Mapped[str] = mapped_column(String(10), primary_key=True)  # the HTTP status, or "none"
    count: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class ProviderLatency(DefaultBase):
    __tablename__ = "obs_provider_latency"

    provider: Mapped[str] = mapped_column(String(30), primary_key=True)
    operation: Mapped[str] = mapped_column(String(60), primary_key=True)
    le: Mapped[float] = mapped_column(Float, primary_key=True)  # the bucket's upper bound (s), Infinity last
    count: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    sum_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))


class MaintenanceRun(DefaultBase):
    __tablename__ = "obs_maintenance_runs"

    task: Mapped[str] = mapped_column(String(40), primary_key=True)  # retention
    succeeded_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB, default=None)


class ProcessSample(DefaultBase):
    """One sample (`webhook_dedupe_hits_total{provider="twilio"}`, a histogram bucket, …) summed over
    every process that observed it."""

    __tablename__ = "obs_process_samples"

    sample: Mapped[str] = mapped_column(String(120), primary_key=True)
    labels: Mapped[str] = mapped_column(Text, primary_key=True)  # JSON, keys sorted
    family: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(20))  # counter | histogram
    help: Mapped[str] = mapped_column(Text, server_default=text("''"))
    value: Mapped[float] = mapped_column(Float, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class Duration(DefaultBase):
    """A handling time (booking POST), kept for the percentile's window, deleted after it."""

    __tablename__ = "obs_durations"
    __table_args__ = (Index("ix_obs_durations_name_observed_at", "name", "observed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    observed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    ms: Mapped[float] = mapped_column(Float)


class RestoreDrill(DefaultBase):
    """A successful restore drill, recorded in `DATABASE_URL`'s database (the scratch one is dropped)."""

    __tablename__ = "obs_restore_drills"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    finished_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    restore_seconds: Mapped[float] = mapped_column(Float)
    total_seconds: Mapped[float] = mapped_column(Float)  # restore + migrations + smoke test
    newest_event_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    source: Mapped[str] = mapped_column(String(200))  # a URL without its credentials, or the dump's path

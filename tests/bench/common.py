"""Benchmark plumbing: a fresh migrated database, real processes, percentile tables."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.conftest import SERVER_URL, recreate_database, run_nmc
from tests.processes import Process, free_port

BENCH_DATABASE = "nmc_bench"


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def fresh_database() -> str:
    url = f"{SERVER_URL}/{BENCH_DATABASE}"
    asyncio.run(recreate_database(SERVER_URL, BENCH_DATABASE))
    run_nmc("db", "upgrade", env={"DATABASE_URL": url})
    return url


class BenchStack:
    """web + worker as `just web` / `just worker` start them, on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log_dir = Path(tempfile.mkdtemp(prefix="nmc-bench-"))
        self.env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "PORT": str(self.port),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.base_url = self.env["PUBLIC_BASE_URL"]
        self.web = Process("web", self.env, self.log_dir)
        self.worker = self.start_worker()
        self._wait_healthy()

    def start_worker(self, **overrides: str) -> Process:
        worker = Process("worker", {**self.env, "LOG_LEVEL": "INFO", **overrides}, self.log_dir)
        worker.wait_for_output("worker.consumer_started")
        return worker

    def restart_worker(self, **overrides: str) -> None:
        self.worker.stop()
        self.worker = self.start_worker(**overrides)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        sys.exit(f"web did not start:\n{self.web.output()[-2000:]}")

    def stop(self) -> None:
        self.worker.stop()
        self.web.stop()


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table (pasted into the README)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)

"""Benchmark plumbing: a fresh migrated database, real processes, percentile tables."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import SERVER_URL, recreate_database, run_nmc
from tests.processes import Stack, free_port

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


class BenchStack(Stack):
    """web + worker as `just web` / `just worker` start them, on a free port, quiet logs on the web."""

    def __init__(self, env: dict[str, str]) -> None:
        port = free_port()
        full_env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "PORT": str(port),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        super().__init__(full_env, Path(tempfile.mkdtemp(prefix="nmc-bench-")), worker_env={"LOG_LEVEL": "INFO"})


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table (pasted into the README)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)

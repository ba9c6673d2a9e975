"""Benchmark plumbing: a fresh migrated database, real processes, percentile tables."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import SERVER_URL, recreate_database, run_nmc
from tests.processes import Stack, free_port

# BENCH_DATABASE: another name, for two benches (e.g. a before/after worktree) at once.
BENCH_DATABASE = os.environ.get("BENCH_DATABASE", "nmc_bench")


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

    def __init__(self, env: dict[str, str], worker_env: dict[str, str] | None = None) -> None:
        port = free_port()
        full_env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "PORT": str(port),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "LOG_LEVEL": "WARNING",
            **env,
        }
        log_dir = Path(tempfile.mkdtemp(prefix="nmc-bench-"))
        super().__init__(full_env, log_dir, worker_env={"LOG_LEVEL": "INFO", **(worker_env or {})})


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (/proc/PID/stat fields 14 and 15), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            found += [int(child) for child in children.read_text().split()]
    return found


def tree_cpu(root_pid: int) -> dict[int, float]:
    """CPU seconds of a process and all its descendants (`just` → `uv run` → python), by pid."""
    seen: dict[int, float] = {}
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        if pid not in seen:
            seen[pid] = _cpu_seconds(pid)
            pending += _children(pid)
    return seen


async def vacuum_when_autovacuum_is_off(database_url: str) -> bool:
    """VACUUM (ANALYZE) the database when the server runs without autovacuum (this machine's does):
    without it every run leaves its dead rows (the queue's deleted jobs, the outbox's settled rows) for
    the next one to scan, and CPU per call climbs from run to run — which production, where autovacuum
    keeps up, never sees. True when it vacuumed."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        if await connection.fetchval("SHOW autovacuum") == "on":
            return False
        await connection.execute("VACUUM (ANALYZE)")
        return True
    finally:
        await connection.close()


async def backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends serving the bench database (we run as the server's host user)."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return [row["pid"] for row in rows]


class CpuMeter:
    """CPU spent by web, worker and their PostgreSQL backends over a window, from /proc.

    Per process, unlike wall-clock latency, so it stays comparable when other work shares the cores.
    Backends that appear during the window count from zero; ones that end in it are lost (the pools
    keep theirs open, so few are).
    """

    def __init__(self, stack: Stack, database_url: str) -> None:
        self.stack = stack
        self.database_url = database_url

    def _sample(self) -> dict[str, dict[int, float]]:
        backends = asyncio.run(backend_pids(self.database_url))
        return {
            "web": tree_cpu(self.stack.web.popen.pid),
            "worker": tree_cpu(self.stack.worker.popen.pid),
            "postgres": {pid: _cpu_seconds(pid) for pid in backends},
        }

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        spent = {}
        for part, now in after.items():
            before = self._before.get(part, {})
            spent[part] = sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in now.items())
        return spent


COUNTER_PATH = Path(__file__).with_name("count_statements")  # its sitecustomize.py counts statements
COMMITS = "(commits)"  # the counter's keys for commits
PGQUEUER_COMMITS = "(commits: PgQueuer's own)"


def is_pgqueuer(statement: str) -> bool:
    """PgQueuer's own SQL (enqueue, dequeue, probes, job log): its count varies with how jobs batch."""
    return "pgqueuer" in statement


class StatementCounter:
    """Statements and commits per process role, counted inside the processes the bench starts (see
    count_statements/sitecustomize.py), diffed over a window like `CpuMeter`."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="nmc-bench-statements-"))

    def env(self, role: str) -> dict[str, str]:
        """What a process started with it needs (`role`: web or worker)."""
        python_path = os.pathsep.join(filter(None, [str(COUNTER_PATH), os.environ.get("PYTHONPATH")]))
        return {
            "PYTHONPATH": python_path,
            "BENCH_COUNT_STATEMENTS": "1",
            "BENCH_STATEMENTS_DIR": str(self.directory),
            "BENCH_ROLE": role,
        }

    def snapshot(self) -> dict[str, Counter[str]]:
        by_role: dict[str, Counter[str]] = {}
        for path in self.directory.glob("*.json"):
            dumped = json.loads(path.read_text())
            by_role.setdefault(dumped["role"], Counter()).update(dumped["statements"])
        return by_role

    @staticmethod
    def spent(before: dict[str, Counter[str]], after: dict[str, Counter[str]]) -> dict[str, Counter[str]]:
        return {role: counts - before.get(role, Counter()) for role, counts in after.items()}


_DATABASE_STATS = """
    SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted
    FROM pg_stat_database WHERE datname = current_database()
"""
_TABLE_WRITES = """
    SELECT schemaname || '.' || relname AS name, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd
    FROM pg_stat_user_tables
"""


async def database_stats(database_url: str) -> dict[str, float]:
    """Postgres's own counters for the database (commits, rows written) and per table
    (`table.ins`/`.upd`/`.del`). Backends publish them when idle, at most once a second and within
    about 10 s: sample after the processes have been quiet that long."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        row = await connection.fetchrow(_DATABASE_STATS)
        stats = {key: float(value) for key, value in row.items()}
        for table_row in await connection.fetch(_TABLE_WRITES):
            for column, short in (("n_tup_ins", "ins"), ("n_tup_upd", "upd"), ("n_tup_del", "del")):
                stats[f"{table_row['name']}.{short}"] = float(table_row[column])
    finally:
        await connection.close()
    return stats


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table (pasted into the README)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)

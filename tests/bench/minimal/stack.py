"""The minimal pipeline's database and processes, shaped like `tests.bench.common.BenchStack`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from pgqueuer.adapters.persistence import qb

from tests.conftest import SERVER_URL, recreate_database
from tests.processes import PROJECT_ROOT, Process, Stack, free_port

MINIMAL_DATABASE = os.environ.get("BENCH_DATABASE", "nmc_bench") + "_minimal"


def fresh_minimal_database() -> str:
    url = f"{SERVER_URL}/{MINIMAL_DATABASE}"
    asyncio.run(recreate_database(SERVER_URL, MINIMAL_DATABASE))
    asyncio.run(_install(url))
    return url


async def _install(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(Path(__file__).with_name("schema.sql").read_text())
        await connection.execute(qb.QueryBuilderEnvironment().build_install_query())
    finally:
        await connection.close()


class Module(Process):
    """`python -m MODULE` in its own process group (like `Process`, without `just` and `uv run`)."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.recipe = module
        self.log_path = log_dir / f"{module}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class MinimalStack(Stack):
    """The minimal web + worker on a free port; `env` as for `BenchStack` (DATABASE_URL, TWILIO_*)."""

    def __init__(self, env: dict[str, str], worker_env: dict[str, str] | None = None) -> None:
        port = free_port()
        full_env = {**os.environ, "PORT": str(port), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}
        self.env = full_env
        self.log_dir = Path(tempfile.mkdtemp(prefix="nmc-bench-minimal-"))
        self.base_url = full_env["PUBLIC_BASE_URL"]
        self.worker_env = worker_env or {}
        self.worker_listen = True
        self.web = Module("tests.bench.minimal.web", full_env, self.log_dir)
        self.worker = self.start_worker()
        self.wait_healthy()

    def start_worker(self, **overrides: str) -> Process:
        worker = Module("tests.bench.minimal.worker", {**self.env, **self.worker_env, **overrides}, self.log_dir)
        worker.wait_for_output("minimal.worker_started")
        return worker

    def restart_worker(self, **overrides: str) -> None:
        raise NotImplementedError("the minimal pipeline always listens (no --polling scenario)")

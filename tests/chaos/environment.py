"""What the fault suite runs against: a private PostgreSQL cluster, the fake Twilio API, and the real
`nmc web`, `nmc worker` (two of them) and `nmc jobs` processes, started as the README starts them.

The cluster is the suite's own (initdb into a temporary directory, on a free port, as `just dev`
does with `nmc.devdb`): the Postgres-restart scenario restarts it, and the machine's shared server on
5432, which other test runs use, is never touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx

from nmc.devdb import PrivateCluster, ensure_database, start_private_cluster, stop_private_cluster
from tests.bench.first_sms import setup
from tests.conftest import TWILIO_SID, TWILIO_TOKEN, run_nmc
from tests.fakes.twilio_api import FakeTwilio
from tests.processes import Process, free_port, reap

START_TIMEOUT = 120.0  # seconds for `nmc worker` to start consuming (a busy 2-core machine is slow)


class PrivatePostgres:
    """A throw-away cluster of the machine's PostgreSQL binaries (`nmc.devdb`), on a free port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster: PrivateCluster = start_private_cluster(data_dir=root / "pgdata", port=free_port())
        self.log_path = root / "postgres.log"  # where nmc.devdb points the server's log

    @property
    def url(self) -> str:
        return self.cluster.url

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server is back when this returns.
        (`-l` again: the new server's output would otherwise be pg_ctl's, and this call would wait on it.)"""
        self._pg_ctl("-m", "fast", "-w", "-t", "60", "-l", str(self.log_path), "restart")

    def stop(self) -> None:
        stop_private_cluster(self.cluster)

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self.cluster.bindir / "pg_ctl"), "-D", str(self.cluster.data_dir), *args]
        if os.geteuid() == 0:  # as nmc.devdb does: the server runs as `postgres`, never as root
            command = ["runuser", "-u", "postgres", "--", *command]
        with (self.root / "pg_ctl.out").open("a") as out:
            subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=120)


class ChaosEnv:
    """The system under test. `workers` worker processes; each can be killed and started again."""

    def __init__(self, workers: int = 2) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nmc-chaos-"))
        self.root.chmod(0o755)  # the cluster runs as `postgres` when we are root: it must reach its directory
        self.postgres: PrivatePostgres | None = None
        self.fake = FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN, collect_garbage=False)
        self.processes: list[Process] = []
        try:
            self.postgres = PrivatePostgres(self.root / "pg")
            self.database_url = self.postgres.url
            asyncio.run(ensure_database(self.database_url))
            migrated = run_nmc("db", "upgrade", env={"DATABASE_URL": self.database_url}, check=False)
            if migrated.returncode:
                raise RuntimeError(f"nmc db upgrade failed:\n{migrated.stderr[-2000:]}")
            self.fake.start()
            # The first-SMS benchmark's set-up: its tenant (no quiet hours, no cooldown) and web + worker.
            self.stack = setup(self.database_url, self.fake)
            self.processes = [self.stack.web, self.stack.worker]
            self.workers = [self.stack.worker]
            self.jobs = Process("jobs", self.stack.env, self.stack.log_dir)
            self.processes.append(self.jobs)
            self.workers += [self._spawn_worker() for _ in range(workers - 1)]  # they start side by side
            for worker in self.workers[1:]:
                worker.wait_for_output("worker.consumer_started", timeout=START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    @property
    def log_dir(self) -> Path:
        return self.stack.log_dir

    # ------------------------------------------------------------------ processes

    def kill_worker(self, index: int) -> None:
        """kill -9 the worker's whole process group (`just`, `uv`, `nmc worker`)."""
        self.workers[index].stop(signal.SIGKILL)

    def start_worker(self, index: int) -> float:
        """Start `nmc worker` in slot `index`; returns how long it took to consume (seconds)."""
        started = time.monotonic()
        self.workers[index] = self._spawn_worker()
        self.stack.worker = self.workers[0]
        self.workers[index].wait_for_output("worker.consumer_started", timeout=START_TIMEOUT)
        return time.monotonic() - started

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def start_workers(self) -> list[str]:
        """Every worker slot at once, as a supervisor would: one that exits while starting is started
        again (up to 3 times). Returns how each such start ended."""
        self.workers = [self._spawn_worker() for _ in self.workers]
        self.stack.worker = self.workers[0]
        crashes = []
        for slot in range(len(self.workers)):
            for _attempt in range(3):
                try:
                    self.workers[slot].wait_for_output("worker.consumer_started", timeout=START_TIMEOUT)
                    break
                except AssertionError:
                    crashes.append(f"worker {slot + 1} exited at start: {self.last_error(self.workers[slot])}")
                    self.workers[slot].stop()
                    self.workers[slot] = self._spawn_worker()
            self.stack.worker = self.workers[0]
        return crashes

    def revive(self) -> list[str]:
        """Start again any worker that died (a process's crash is its scenario's failure, not the next one's)."""
        dead = [slot for slot, worker in enumerate(self.workers) if worker.popen.poll() is not None]
        notes = []
        for slot in dead:
            notes.append(f"worker {slot + 1} had died: {self.last_error(self.workers[slot])}")
            self.workers[slot].stop()
            for _attempt in range(3):
                try:
                    self.start_worker(slot)
                    break
                except AssertionError:
                    continue
        return notes

    def _spawn_worker(self) -> Process:
        """`just worker` as the stack starts it (its env plus the worker's), remembered for `stop`."""
        process = Process("worker", {**self.stack.env, **self.stack.worker_env}, self.log_dir)
        self.processes.append(process)
        return process

    @staticmethod
    def last_error(process: Process) -> str:
        """The last line of a process's output that names an error (its cause of death, usually)."""
        lines = [line for line in process.output().splitlines() if "Error" in line or "error" in line]
        return lines[-1].strip()[:200] if lines else f"exit {process.popen.returncode}"

    def dead_processes(self) -> list[str]:
        """Processes that exited although nobody stopped them."""
        running = [("web", self.stack.web), ("jobs", self.jobs)]
        running += [(f"worker {i + 1}", worker) for i, worker in enumerate(self.workers)]
        return [
            f"{name} exited ({process.popen.returncode})"
            for name, process in running
            if process.popen.poll() is not None
        ]

    def stop(self) -> None:
        """Every process this environment ever started, the fake, the cluster and its directory."""
        for process in reversed(self.processes):
            process.stop()
            reap(process)
        self.fake.stop()
        try:
            if self.postgres is not None:
                self.postgres.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ logs

    def log_files(self) -> list[Path]:
        return [*sorted(self.log_dir.glob("*.log")), self.postgres.log_path]

    def log_marks(self) -> dict[Path, int]:
        return {path: path.stat().st_size for path in self.log_files() if path.exists()}

    def grep_since(self, marks: dict[Path, int], pattern: str) -> list[str]:
        """Lines matching `pattern` (case-insensitive) written to any process's log since `marks`."""
        wanted = re.compile(pattern, re.IGNORECASE)
        found = []
        for path in self.log_files():
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(marks.get(path, 0))
                text = log.read().decode(errors="replace")
            found += [f"{path.name}: {line.strip()[:300]}" for line in text.splitlines() if wanted.search(line)]
        return found

    # ------------------------------------------------------------------ database and metrics

    @asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        connection = await asyncpg.connect(self.database_url, timeout=10)
        try:
            yield connection
        finally:
            await connection.close()

    async def quiesce(self, timeout: float) -> int:
        """Wait (up to `timeout` s) until no missed call's text waits in the outbox; returns how many still do."""
        deadline = time.monotonic() + timeout
        while True:
            async with self.db() as db:
                waiting = await db.fetchval(
                    "SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed' AND dispatched_at IS NULL"
                )
            if not waiting or time.monotonic() > deadline:
                return int(waiting)
            await asyncio.sleep(0.5)

    async def count_rows(self) -> dict[str, int]:
        async with self.db() as db:
            return {
                table: await db.fetchval(f"SELECT count(*) FROM {table}")
                for table in ("webhook_events", "conv_calls", "conv_messages", "conv_threads", "outbox_events")
            }

    def metric(self, name: str, labels: str) -> float:
        """One sample of the web's /metrics (0 when the series does not exist yet)."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

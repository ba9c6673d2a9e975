"""The restore drill (runbook §8 "Restore drills monthly", §9 RPO ≤ 15 min / RTO ≤ 2 h):
`just restore-drill SOURCE_URL_OR_DUMP`.

1. a new scratch database on the server of `DATABASE_URL` (`nmc_restore_drill_<time>_<pid>`);
2. restore: a database URL is dumped (`pg_dump -Fc`) and restored (`pg_restore`); a file is restored
   with `pg_restore` when it is an archive (Render's backups, `pg_dump -Fc`), with `psql` when plain SQL;
3. migrations (`nmc db upgrade`): a snapshot older than the code is brought up to it;
4. the newest event in the restore (`outbox_events.created_at`, `webhook_events.received_at`): how much
   the snapshot lost if it were restored now — read the RPO from it;
5. the smoke test: a local web + worker on the scratch database with the console SMS backend (nothing
   reaches Twilio, not even the restored backlog), a drill tenant, and `nmc simulate missed-call`
   (signed webhooks, the first SMS, its latency);
6. the scratch database is dropped, whatever happened (`--keep` keeps it for a look);
7. a success is recorded in the operator's database — `DATABASE_URL`'s, not the scratch one, which is
   gone — in `obs_restore_drills` (when, restore and total seconds, newest event, the source without
   credentials): the web's `/metrics` serves `restore_drill_last_success_timestamp_seconds` from it and
   `RestoreDrillOverdue` raises a ticket when no drill succeeded for 35 days.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

SMOKE_TIMEOUT_SECONDS = 60.0


class DrillFailed(Exception):
    """A step of the drill failed (the scratch database is dropped all the same)."""


@dataclass
class DrillReport:
    scratch: str
    steps: list[tuple[str, float]] = field(default_factory=list)
    newest_event: datetime | None = None
    smoke: str = ""

    def lines(self) -> list[str]:
        out = [f"{step}: {seconds:.1f} s" for step, seconds in self.steps]
        if self.newest_event is None:
            out.append("newest event in the restore: none (no outbox or webhook rows)")
        else:
            age = datetime.now(UTC) - self.newest_event
            out.append(
                f"newest event in the restore: {self.newest_event.isoformat()} "
                f"({age.total_seconds() / 60:.1f} minutes before now: the data a restore now would lose; RPO ≤ 15)"
            )
        out.append(f"smoke: {self.smoke}")
        total = sum(seconds for _, seconds in self.steps)
        out.append(f"total: {total:.1f} s from empty database to a first SMS (RTO ≤ 2 h, plus provisioning)")
        return out


def server_of(database_url: str) -> str:
    return database_url.rsplit("/", 1)[0]


def source_label(source: str) -> str:
    """The source as recorded and printed: a URL without user, password or query; a dump's path as given."""
    if not is_database_url(source):
        return source
    parts = urlsplit(source)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def record_success(database_url: str, report: DrillReport, source: str) -> datetime:
    """The drill's success, in the operator's database (`obs_restore_drills`, for RestoreDrillOverdue)."""
    from nmc.observability.maintenance import RECORD_RESTORE_DRILL_SQL

    restore_seconds = dict(report.steps)["restore"]
    total = sum(seconds for _, seconds in report.steps)
    connection = await asyncpg.connect(database_url)
    try:
        finished: datetime = await connection.fetchval(
            RECORD_RESTORE_DRILL_SQL, restore_seconds, total, report.newest_event, source_label(source)
        )
    finally:
        await connection.close()
    return finished


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(args: list[str], *, env: dict[str, str] | None = None, what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise DrillFailed(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def _timed(report: DrillReport, step: str, action: Callable[[], object]) -> None:
    started = time.monotonic()
    action()
    report.steps.append((step, time.monotonic() - started))


async def _admin(server: str, sql: str) -> None:
    connection = await asyncpg.connect(f"{server}/postgres")
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _drop(server: str, name: str) -> None:
    connection = await asyncpg.connect(f"{server}/postgres")
    try:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await connection.close()


def is_database_url(source: str) -> bool:
    return source.split("://", 1)[0] in {"postgres", "postgresql"}


def restore(source: str, target_url: str) -> None:
    """Restore a database URL, a pg_dump archive or a plain SQL file into `target_url`."""
    for tool in ("pg_dump", "pg_restore", "psql"):
        if shutil.which(tool) is None:
            raise DrillFailed(f"{tool} is missing (Debian: apt-get install postgresql-client)")
    with tempfile.TemporaryDirectory(prefix="nmc-restore-drill-") as tmp:
        if is_database_url(source):
            archive = str(Path(tmp) / "source.dump")
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", "-f", archive, source], what="pg_dump")
        else:
            archive = source
            if not Path(archive).exists():
                raise DrillFailed(f"no such dump: {archive}")
        is_archive = subprocess.run(["pg_restore", "--list", archive], capture_output=True).returncode == 0
        if is_archive:
            _run(
                ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "-d", target_url, archive],
                what="pg_restore",
            )
        else:
            _run(["psql", "-v", "ON_ERROR_STOP=1", "-q", "-d", target_url, "-f", archive], what="psql")


async def newest_event(url: str) -> datetime | None:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(
            "SELECT greatest((SELECT max(created_at) FROM outbox_events), "
            "(SELECT max(received_at) FROM webhook_events))"
        )
    finally:
        await connection.close()


def _zone_at_noon() -> str:
    """A fixed-offset zone where it is about midday now: the drill's text is never held by quiet hours."""
    offset = (12 - datetime.now(UTC).hour + 12) % 24 - 12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield child
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


def smoke(target_url: str) -> str:
    """A local web + worker on the restored database, console SMS backend, one synthetic missed call."""
    import httpx

    port = _free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": target_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "TWILIO_ACCOUNT_SID": "",  # the console backend: nothing restored or smoked reaches Twilio
        "TWILIO_AUTH_TOKEN": "",
        "TWILIO_AUTH_TOKEN_PREVIOUS": "",
        "PAUSE_OUTBOUND_SMS": "false",
        "LOOKUP_LINE_TYPE_BEFORE_FIRST_SMS": "false",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    }
    nmc = [sys.executable, "-m", "nmc"]
    number = f"+1555{secrets.randbelow(10**7):07d}"
    caller = f"+1555{secrets.randbelow(10**7):07d}"
    with tempfile.TemporaryDirectory(prefix="nmc-restore-smoke-") as tmp:
        logs = Path(tmp)
        with (
            _process([*nmc, "web", "--host", "127.0.0.1", "--port", str(port)], env, logs / "web.log") as web,
            _process([*nmc, "worker"], env, logs / "worker.log") as worker,
        ):
            deadline = time.monotonic() + SMOKE_TIMEOUT_SECONDS
            while True:
                for name, child in (("web", web), ("worker", worker)):
                    if child.poll() is not None:
                        raise DrillFailed(f"the {name} exited: {(logs / f'{name}.log').read_text()[-2000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise DrillFailed("the web never answered /healthz")
                time.sleep(0.2)
            while "worker.consumer_started" not in (logs / "worker.log").read_text():
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise DrillFailed(f"the worker did not start: {(logs / 'worker.log').read_text()[-2000:]}")
                time.sleep(0.2)
            _run(
                [*nmc, "tenants", "create", "--name", "Restore drill", "--number", number,
                 "--forward-to", "+15550000001", "--timezone", _zone_at_noon()],
                env=env, what="creating the drill tenant",
            )  # fmt: skip
            result = _run(
                [*nmc, "simulate", "missed-call", "--to", number, "--from", caller, "--timeout", "30"],
                env=env,
                what="the smoke test (nmc simulate missed-call)",
            )
    return result.stdout.strip().splitlines()[-1]


async def _create(server: str, name: str) -> None:
    await _admin(server, f'CREATE DATABASE "{name}"')


def run_drill(
    source: str,
    *,
    server: str,
    record_to: str | None = None,
    keep: bool = False,
    echo: Callable[[str], None] = print,
) -> DrillReport:
    """The drill; on success it is recorded in `record_to` (the operator's `DATABASE_URL`) when given."""
    import asyncio

    name = f"nmc_restore_drill_{datetime.now(UTC):%Y%m%d%H%M%S}_{os.getpid()}"
    target = f"{server}/{name}"
    report = DrillReport(scratch=name)
    echo(f"restore drill: {source if not is_database_url(source) else 'a dump of the source database'} -> {name}")
    asyncio.run(_create(server, name))
    try:
        _timed(report, "restore", lambda: restore(source, target))
        echo(f"restore: {report.steps[-1][1]:.1f} s")
        env = {**os.environ, "DATABASE_URL": target}
        _timed(
            report,
            "migrations",
            lambda: _run([sys.executable, "-m", "nmc", "db", "upgrade"], env=env, what="nmc db upgrade"),
        )
        report.newest_event = asyncio.run(newest_event(target))
        smoked: list[str] = []
        _timed(report, "smoke test", lambda: smoked.append(smoke(target)))
        report.smoke = smoked[0]
    finally:
        if keep:
            echo(f"kept the scratch database: {target}")
        else:
            asyncio.run(_drop(server, name))
            echo(f"dropped the scratch database {name}")
    if record_to is not None:
        try:
            finished = asyncio.run(record_success(record_to, report, source))
        except (OSError, asyncpg.PostgresError) as exc:
            raise DrillFailed(
                f"the drill passed but its success could not be recorded in {source_label(record_to)} "
                f"(RestoreDrillOverdue will not clear; is it migrated?): {exc}"
            ) from exc
        echo(
            f"recorded in {source_label(record_to)} at {finished.isoformat(timespec='seconds')} "
            "(restore_drill_last_success_timestamp_seconds)"
        )
    return report

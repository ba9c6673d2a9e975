"""Shared fixtures: a real, migrated Postgres database and a fake Clerk issuer.

The environment is set before any `nmc` module reads its settings. Tests never mock our database
or our HTTP layer; providers are fake servers on loopback that speak their wire formats.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fakes.clerk import FakeClerk

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVER_URL = os.environ.get("NMC_TEST_SERVER_URL", "postgresql://127.0.0.1:5432")
# One database per test session: a developer's run and CI's (or two checkouts) never share one.
TEST_DATABASE = f"nmc_test_{os.getpid()}"
TEST_DATABASE_URL = f"{SERVER_URL}/{TEST_DATABASE}"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "test-twilio-auth-token"
MESSAGING_SERVICE_SID = "MG" + "1" * 32

CLERK = FakeClerk()

TEST_ENVIRONMENT = {
    "ENVIRONMENT": "test",
    "DATABASE_URL": TEST_DATABASE_URL,
    "SECRET_KEY": "test-secret-key",
    "PUBLIC_BASE_URL": "http://127.0.0.1:8000",
    "TWILIO_ACCOUNT_SID": TWILIO_SID,
    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
    "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
    "CLERK_JWT_ISSUER": CLERK.issuer,
    "CLERK_JWKS_URL": "http://127.0.0.1:9/.well-known/jwks.json",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(TEST_ENVIRONMENT)

# Tables the suite empties between tests: ours, and the queues' work tables.
OWN_TABLES_SQL = """
SELECT string_agg(format('%I.%I', schemaname, tablename), ', ')
FROM pg_tables
WHERE (schemaname = 'public' AND tablename NOT IN ('alembic_version', 'pgqueuer_schedules'))
   OR (schemaname = 'dramatiq' AND tablename IN ('queue', 'result'))
"""


def run_nmc(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `nmc` command as a user would (same interpreter, real process)."""
    return subprocess.run(
        [sys.executable, "-m", "nmc", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=check,
        cwd=PROJECT_ROOT,
    )


def run_cli(
    *args: str, input_: str | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`run_nmc` in-process: the same command line through click's test runner, in a thread of its own
    (the command runs its own event loop, also when called from an async test). For a command's
    behaviour in integration tests: a process per command costs 2-4 s of imports. `run_nmc` stays for
    what only a real process shows (a traceback never printed, settings refused at start) and for e2e
    tests. `env` is set for the command only; the settings it loaded are dropped after it."""
    from click.testing import CliRunner

    from nmc.cli import cli

    try:
        with ThreadPoolExecutor(1) as thread:
            result = thread.submit(CliRunner().invoke, cli, list(args), input_, env).result()
    finally:
        _reload_settings()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    completed = subprocess.CompletedProcess(["nmc", *args], result.exit_code, result.stdout, result.stderr)
    if check:
        completed.check_returncode()
    return completed


async def drop_database(server_url: str, name: str, *, recreate: bool = False) -> None:
    admin = await asyncpg.connect(f"{server_url}/postgres")
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if recreate:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def recreate_database(server_url: str, name: str) -> None:
    await drop_database(server_url, name, recreate=True)


@pytest.fixture(scope="session", autouse=True)
def clerk() -> Iterator[FakeClerk]:
    CLERK.start()
    os.environ["CLERK_JWKS_URL"] = CLERK.jwks_url
    _reload_settings()
    yield CLERK
    CLERK.stop()


def _reload_settings() -> None:
    from nmc.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture(scope="session")
def migrated_database() -> Iterator[str]:
    """A fresh database for this session, migrated with the real `nmc db upgrade`, dropped at the end."""
    asyncio.run(recreate_database(SERVER_URL, TEST_DATABASE))
    run_nmc("db", "upgrade")
    yield TEST_DATABASE_URL
    from nmc.observability.flusher import stop_flusher

    stop_flusher()  # its last flush into this database, before it is dropped (no flush_failed at exit)
    asyncio.run(drop_database(SERVER_URL, TEST_DATABASE))


@pytest.fixture
async def db(migrated_database: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the emptied test database, for arranging and asserting with plain SQL."""
    connection = await asyncpg.connect(migrated_database)
    tables = await connection.fetchval(OWN_TABLES_SQL)
    for attempt in range(3):
        try:
            await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
            break
        except asyncpg.DeadlockDetectedError:  # an e2e module's worker wrote two tables at that moment
            if attempt == 2:
                raise
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Change settings for one test: `settings_env(PAUSE_OUTBOUND_SMS="true")`."""

    def apply(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        _reload_settings()

    yield apply
    _reload_settings()


@pytest.fixture(scope="session")
def fake_twilio_server() -> Iterator[Any]:
    from tests.fakes.twilio_api import FakeTwilio

    with FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN) as server:
        yield server


@pytest.fixture
def fake_twilio(fake_twilio_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake Twilio API, emptied, with this process's SMS sender pointed at it."""
    from nmc.messaging import use_sms_clients

    fake_twilio_server.reset()
    monkeypatch.setenv("TWILIO_API_BASE_URL", fake_twilio_server.base_url)
    _reload_settings()
    use_sms_clients()  # built again from these settings on first use
    yield fake_twilio_server
    use_sms_clients()

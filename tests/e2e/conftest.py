"""The real processes, started as the README starts them (`just web`, `just worker`), on loopback,
with the fake Twilio API. Tests talk to them over HTTP and read Postgres to assert."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import TEST_DATABASE_URL
from tests.processes import Stack, free_port

pytestmark = pytest.mark.e2e


def stack_env(twilio_api: str, **settings: str) -> dict[str, str]:
    """The environment every e2e module starts `just web` / `just worker` / `just jobs` with: the test
    database, a free port (or `PORT` from `settings`) and its public URL, the fake Twilio API at
    `twilio_api`, INFO logs, a 3 s lease; `settings` add to or override it."""
    port = settings.get("PORT") or str(free_port())
    return {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": TEST_DATABASE_URL,
        "PORT": port,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_API_BASE_URL": twilio_api,
        "LOG_LEVEL": "INFO",
        "OUTBOX_LEASE_SECONDS": "3",
        **settings,
    }


# Module scope: the real worker must not outlive the e2e module and dispatch other tests' rows.
@pytest.fixture(scope="module")
def stack(migrated_database: str, fake_twilio_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(stack_env(fake_twilio_server.base_url), tmp_path_factory.mktemp("e2e-logs"))
    yield running
    running.stop()


async def wait_for(check: Any, timeout: float = 10) -> Any:
    """Poll an async check until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")

"""The real processes, started as the README starts them (`just web`, `just worker`), on loopback,
with the fake Twilio API. Tests talk to them over HTTP and read Postgres to assert."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_DATABASE_URL
from tests.processes import Process, free_port

pytestmark = pytest.mark.e2e


class Stack:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.base_url = env["PUBLIC_BASE_URL"]
        self.web = Process("web", env, log_dir)
        self.worker = self.start_worker()
        self.wait_healthy()

    def start_worker(self, **overrides: str) -> Process:
        worker = Process("worker", {**self.env, **overrides}, self.log_dir)
        worker.wait_for_output("worker.consumer_started")
        return worker

    def restart_worker(self, **overrides: str) -> None:
        self.worker.stop()
        self.worker = self.start_worker(**overrides)

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"web never became healthy:\n{self.web.output()[-3000:]}")

    def stop(self) -> None:
        self.worker.stop()
        self.web.stop()


# Module scope: the real worker must not outlive the e2e module and dispatch other tests' rows.
@pytest.fixture(scope="module")
def stack(migrated_database: str, fake_twilio_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": TEST_DATABASE_URL,
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_API_BASE_URL": fake_twilio_server.base_url,
        "LOG_LEVEL": "INFO",
        "OUTBOX_LEASE_SECONDS": "3",
    }
    running = Stack(env, tmp_path_factory.mktemp("e2e-logs"))
    yield running
    running.stop()

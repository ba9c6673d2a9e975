"""The real processes, started as the README starts them (`just web`, `just worker`), on loopback,
with the fake Twilio API. Tests talk to them over HTTP and read Postgres to assert."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PROJECT_ROOT, TEST_DATABASE_URL

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Process:
    """One `just <recipe>` process in its own process group, its output in a log file."""

    def __init__(self, recipe: str, env: dict[str, str], log_dir: Path) -> None:
        self.recipe = recipe
        self.log_path = log_dir / f"{recipe}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.popen = subprocess.Popen(
            ["just", recipe],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_output(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.recipe} never printed {needle!r}:\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


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


@pytest.fixture(scope="session")
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

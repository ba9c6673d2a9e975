"""Real `just <recipe>` processes for e2e tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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


def reap(process: Process, grace: float = 10.0) -> None:
    """Make sure nothing of a stopped process's group is left: what outlives SIGTERM by `grace`
    seconds (seen with `nmc jobs`' Dramatiq worker processes) is killed, and said so."""
    group = process.popen.pid  # started with start_new_session: the group id is its pid
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
        print(f"`just {process.recipe}` left processes {grace:g} s after SIGTERM; killed them", flush=True)


class Stack:
    """web + worker, as `just web` / `just worker` start them; `worker_env` adds to the worker's env."""

    def __init__(self, env: dict[str, str], log_dir: Path, worker_env: dict[str, str] | None = None) -> None:
        self.env = env
        self.log_dir = log_dir
        self.base_url = env["PUBLIC_BASE_URL"]
        self.worker_env = worker_env or {}
        self.web = Process("web", env, log_dir)
        self.worker = self.start_worker()
        self.wait_healthy()

    def start_worker(self, **overrides: str) -> Process:
        worker = Process("worker", {**self.env, **self.worker_env, **overrides}, self.log_dir)
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

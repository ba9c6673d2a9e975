"""One log pipeline: the real `nmc web` and `nmc jobs` processes print nothing but our JSON lines
(LOG_FORMAT=json) — uvicorn's and Dramatiq's own records included, phone numbers masked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PROJECT_ROOT, TEST_DATABASE_URL
from tests.processes import free_port

pytestmark = pytest.mark.e2e
CALLER = "+15551234567"


class NmcProcess:
    """`python -m nmc ARGS` with stdout and stderr kept apart, each in its own file."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.stdout_path, self.stderr_path = log_dir / "stdout.log", log_dir / "stderr.log"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "nmc", *args], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err
            )

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.popen.poll() is None:
            if needle in self.stdout() + self.stderr():
                return
            time.sleep(0.1)
        raise AssertionError(f"never printed {needle!r}:\n{self.stdout()[-3000:]}\n{self.stderr()[-3000:]}")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def json_lines(text: str) -> list[dict[str, Any]]:
    not_json = [line for line in text.splitlines() if not _is_json_object(line)]
    assert not_json == [], not_json[:20]
    return [json.loads(line) for line in text.splitlines()]


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def process_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "development",  # whose default would be console
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": TEST_DATABASE_URL,
        **extra,
    }


@pytest.fixture
def web(migrated_database: str, tmp_path: Path) -> Iterator[tuple[NmcProcess, str]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = NmcProcess(["web"], process_env(PORT=str(port), PUBLIC_BASE_URL=base_url), tmp_path)
    try:
        process.wait_for("Application startup complete.")
        yield process, base_url
    finally:
        process.stop()


def send_garbage(base_url: str) -> None:
    """A request uvicorn refuses itself (its `uvicorn.error` logger warns), before our app sees it."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"NOT HTTP\r\n\r\n")
        connection.recv(1024)


def test_the_web_process_prints_only_json_lines(web: tuple[NmcProcess, str]) -> None:
    process, base_url = web
    # No signature: a 403 with a WARN line of ours, and the http.request line; the caller's number
    # is in the query string and the form, never in a log line.
    response = httpx.post(
        f"{base_url}/webhooks/twilio/voice?From={CALLER}&token=s3cret", data={"From": CALLER}, timeout=5
    )
    assert response.status_code == 403
    send_garbage(base_url)
    process.wait_for("Invalid HTTP request received.")
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
    assert process.stop() in (0, -signal.SIGTERM)

    lines = json_lines(process.stdout())
    assert process.stderr() == ""
    uvicorn_events = {line["event"] for line in lines if line.get("logger") == "uvicorn.error"}
    assert f"Started server process [{process.popen.pid}]" in uvicorn_events
    assert "Invalid HTTP request received." in uvicorn_events
    [request] = [line for line in lines if line["event"] == "http.request"]
    assert (request["method"], request["path"], request["http_status"]) == ("POST", "/webhooks/twilio/voice", 403)
    assert all({"timestamp", "level"} <= line.keys() for line in lines)
    output = process.stdout()
    assert CALLER.removeprefix("+") not in output
    assert "s3cret" not in output


def test_the_jobs_process_prints_only_json_lines(migrated_database: str, tmp_path: Path) -> None:
    process = NmcProcess(["jobs", "--threads", "1"], process_env(), tmp_path)
    try:
        process.wait_for("Worker process is ready for action.")
    finally:
        returncode = process.stop()
    assert returncode == 0, process.stderr()[-3000:]

    # Dramatiq's main process forwards its workers' output to stderr; its own lines go there too.
    lines = json_lines(process.stdout()) + json_lines(process.stderr())
    loggers = {line["logger"] for line in lines if "logger" in line}
    assert {"dramatiq.MainProcess", "dramatiq.WorkerProcess(0)"} <= loggers
    events = {line["event"] for line in lines}
    assert "Worker process is ready for action." in events
    assert "Sending signal 'SIGTERM' to subprocesses..." in events

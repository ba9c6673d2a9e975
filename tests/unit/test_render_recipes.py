"""The Render recipes (issue #13, runbook §11): `just logs`, `just scale`, `just psql`, `just deploy` run as an
operator types them, against a fake `render` executable on PATH that records its argv (the real CLI and
API are out of reach here) and a local HTTP server standing in for Render's API. Each issues the exact
command; with the CLI, the API key or an id missing, each says so in one line instead of a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IDS = {"RENDER_WEB": "srv-web1", "RENDER_WORKER": "srv-worker1", "RENDER_JOBS": "srv-jobs1", "RENDER_DB": "dpg-db1"}
FAKE_RENDER = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_RENDER_LOG"], "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


class Operator:
    def __init__(self, tmp_path: Path, with_cli: bool) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "render.log"
        if with_cli:
            for name in ("render", "psql"):
                (self.bin / name).write_text(FAKE_RENDER)
                (self.bin / name).chmod(0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RENDER_") and k != "DATABASE_URL"}
        self.env |= {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_RENDER_LOG": str(self.log), **IDS}

    def just(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        just = shutil.which("just")
        assert just is not None, "just is missing: pip install rust-just"
        return subprocess.run(
            [just, "--justfile", str(ROOT / "justfile"), *args],
            cwd=ROOT,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def issued(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def operator(tmp_path: Path) -> Operator:
    return Operator(tmp_path, with_cli=True)


def test_logs_tails_the_named_service(operator: Operator) -> None:
    assert operator.just("logs", "web").returncode == 0
    assert operator.just("logs").returncode == 0  # the worker by default
    assert operator.issued() == [
        ["render", "logs", "-r", "srv-web1", "--tail"],
        ["render", "logs", "-r", "srv-worker1", "--tail"],
    ]


def test_psql_opens_the_production_database_or_the_local_one(operator: Operator) -> None:
    assert operator.just("psql").returncode == 0
    assert operator.just("psql", "-c", "select 1").returncode == 0
    assert operator.just("psql", "--local", "-c", "select 1", DATABASE_URL="postgresql://h/nmc").returncode == 0
    assert operator.issued() == [
        ["render", "psql", "dpg-db1"],
        ["render", "psql", "dpg-db1", "-c", "select 1"],
        ["psql", "postgresql://h/nmc", "-c", "select 1"],  # --local: psql on DATABASE_URL
    ]


def test_deploy_runs_the_tags_commit_on_web_then_worker_then_jobs(operator: Operator, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=ops@example.com", "-c", "user.name=ops"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "release"], cwd=repo, check=True)
    subprocess.run([*git, "tag", "v2026.12.01-1"], cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    git_dir = str(repo / ".git")

    deployed = operator.just("deploy", "v2026.12.01-1", GIT_DIR=git_dir)
    assert deployed.returncode == 0, deployed.stderr
    assert f"deployed v2026.12.01-1 ({commit})" in deployed.stdout
    assert operator.issued() == [
        ["render", "deploys", "create", service, "--commit", commit, "--wait", "--confirm", "-o", "text"]
        for service in ("srv-web1", "srv-worker1", "srv-jobs1")
    ]

    for tag, says in (("main", "is not a release tag"), ("v2026.12.01-2", "no tag v2026.12.01-2 here")):
        refused = operator.just("deploy", tag, GIT_DIR=git_dir)
        assert refused.returncode != 0 and says in refused.stderr, refused.stderr
    assert len(operator.issued()) == 3  # production runs release tags only: nothing more was deployed


class FakeRenderApi(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    answer = 202

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeRenderApi.requests.append(
            {"path": self.path, "authorization": self.headers["Authorization"], "body": json.loads(body)}
        )
        self.send_response(FakeRenderApi.answer)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"message": "unauthorized"}' if FakeRenderApi.answer == 401 else b"")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def render_api() -> Iterator[str]:
    FakeRenderApi.requests, FakeRenderApi.answer = [], 202
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRenderApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_scale_asks_the_render_api_for_the_instance_count(operator: Operator, render_api: str) -> None:
    scaled = operator.just("scale", "worker", "2", RENDER_API_KEY="rnd_test", RENDER_API_URL=render_api)
    assert scaled.returncode == 0, scaled.stderr
    assert "worker: 2 instance(s) requested (srv-worker1)" in scaled.stdout
    assert FakeRenderApi.requests == [
        {"path": "/v1/services/srv-worker1/scale", "authorization": "Bearer rnd_test", "body": {"numInstances": 2}}
    ]

    FakeRenderApi.answer = 401
    refused = operator.just("scale", "web", "3", RENDER_API_KEY="rnd_wrong", RENDER_API_URL=render_api)
    assert refused.returncode != 0
    assert 'just scale: the Render API answered 401: {"message": "unauthorized"}' in refused.stderr
    for bad in ("0", "two", "1;rm"):
        wrong = operator.just("scale", "web", bad, RENDER_API_KEY="rnd_test", RENDER_API_URL=render_api)
        assert wrong.returncode != 0 and "COUNT must be a whole number" in wrong.stderr
    assert len(FakeRenderApi.requests) == 2


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("logs", "web"), {}, "the Render CLI (`render`) is not installed: https://render.com/docs/cli"),
        (("psql",), {}, "the Render CLI (`render`) is not installed"),
        (("deploy", "v2026.12.01-1"), {}, "no tag v2026.12.01-1 here"),
        (("scale", "worker", "2"), {}, "RENDER_API_KEY is not set: a key from Render"),
        (("logs", "jobs"), {"RENDER_JOBS": ""}, "RENDER_JOBS is not set: the jobs service's id (srv-…"),
        (("psql",), {"RENDER_DB": ""}, "RENDER_DB is not set: the database's id (dpg-…"),
        (("logs", "cron"), {}, "no service 'cron': web, worker or jobs"),
    ],
)
def test_what_is_missing_is_said_in_one_line_not_a_traceback(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    operator = Operator(tmp_path, with_cli=False)
    result = operator.just(*args, **env, GIT_DIR=str(tmp_path / "no-repo"))
    assert result.returncode != 0
    assert f"just {args[0]}: {says}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "line " not in result.stderr.split("error: recipe")[0]


def test_a_deploy_with_every_id_and_tag_but_no_cli_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=ops@example.com", "-c", "user.name=ops"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "release"], cwd=repo, check=True)
    subprocess.run([*git, "tag", "v2026.12.01-1"], cwd=repo, check=True)
    result = Operator(tmp_path, with_cli=False).just("deploy", "v2026.12.01-1", GIT_DIR=str(repo / ".git"))
    assert result.returncode != 0
    assert "just deploy: the Render CLI (`render`) is not installed" in result.stderr

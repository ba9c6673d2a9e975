"""The operator's kill switch against the real worker process (issue #13): a pause through the operators'
API or `just pause-sms` holds the next missed call's text in the running worker (no restart), and a
resume sends it.

Why the resume bound is 1.5 s and not the issue's "within a second": a resume makes the waiting events
due and enqueues their dispatch (`release_deferred`), so the commit's NOTIFY wakes the worker at once —
measured 0.08-0.12 s on a 2-core box with a load average of 3-4 (before the enqueue, when the worker's
2 s sweep found them, 0.3-1.6 s). 1.5 s leaves that busy box room and still catches a worker that waits
for its pause recheck (minutes) or a restart; it catches a fall-back to the sweep only part of the time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import stack_env, wait_for
from tests.e2e.test_first_sms_e2e import first_sms_status, make_tenant, post_dial_outcome
from tests.processes import Stack

pytestmark = pytest.mark.e2e
OPS_TOKEN = "e2e-operators-token-of-at-least-32-characters"
OPERATOR = {"Authorization": f"Bearer {OPS_TOKEN}"}
HELD_FOR = 2.0  # seconds a paused worker must send nothing
RESUMED_WITHIN = 1.5  # see the module docstring


@pytest.fixture(scope="module")
def stack(migrated_database: str, fake_twilio_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The e2e stack (tests/e2e/conftest.py) with the operators' API on (`OPS_API_TOKEN`)."""
    env = stack_env(fake_twilio_server.base_url, OPS_API_TOKEN=OPS_TOKEN)
    running = Stack(env, tmp_path_factory.mktemp("e2e-kill-switch-logs"))
    yield running
    running.stop()


def ops_status(stack: Stack) -> dict[str, Any]:
    response = httpx.get(f"{stack.base_url}/api/ops/sms-sending", headers=OPERATOR, timeout=5)
    assert response.status_code == 200, response.text
    return dict(response.json())


def ops_change(stack: Stack, body: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(f"{stack.base_url}/api/ops/sms-sending", json=body, headers=OPERATOR, timeout=5)
    assert response.status_code == 200, response.text
    return dict(response.json())


def just(*args: str) -> subprocess.CompletedProcess[str]:
    """A `just` recipe as the operator types it, against the test database (DATABASE_URL in the env)."""
    return subprocess.run(
        ["just", *args], cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, check=True, timeout=60
    )


async def missed_call_is_held(stack: Stack, db: asyncpg.Connection, fake_twilio: Any, n: int) -> None:
    number = await make_tenant(db, stack, n)
    assert post_dial_outcome(stack, number).status_code == 200
    assert await wait_for(lambda: first_sms_status(db)) == "paused"  # the running worker decided: wait
    await asyncio.sleep(HELD_FOR)
    assert fake_twilio.messages() == []
    assert await first_sms_status(db) == "paused"


async def no_recheck_due_within(db: asyncpg.Connection, seconds: float) -> None:
    """Wait until the held text's next pause recheck (every `PAUSE_RECHECK`, 15 s) is at least `seconds`
    away: a recheck in the same moment as the resume sends the text itself, and the resume then has
    nothing left to release (seen once on a loaded CI box, where `just` took long enough to meet it)."""
    next_recheck = (
        "SELECT extract(epoch FROM available_at - now()) FROM outbox_events "
        "WHERE event_name = 'call.missed' AND dispatched_at IS NULL"
    )
    deadline = time.monotonic() + 30
    while (await db.fetchval(next_recheck) or 0) < seconds:
        assert time.monotonic() < deadline, "the held text was never rescheduled"
        await asyncio.sleep(0.2)


def seconds_until_sent(fake_twilio: Any, since: float) -> float:
    fake_twilio.wait_for_messages(1, timeout=10)  # generous to get a figure; the bound is asserted by the caller
    elapsed = time.monotonic() - since
    print(f"resume -> text at the fake Twilio: {elapsed:.2f} s")  # shown with -rP
    return elapsed


async def test_the_api_pauses_and_resumes_the_running_worker(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    worker_pid = stack.worker.popen.pid
    paused = ops_change(stack, {"action": "pause", "by": "oncall", "reason": "Twilio 5xx flood"})
    assert paused["status"]["paused"] is True and paused["status"]["paused_by"] == "oncall (ops API)"

    await missed_call_is_held(stack, db, fake_twilio, 21)
    status = ops_status(stack)
    assert (status["paused"], status["texts_waiting"], status["texts_stale"]) == (True, 1, 0)

    await no_recheck_due_within(db, 3)
    started = time.monotonic()
    resumed = ops_change(stack, {"action": "resume", "by": "oncall"})
    assert (resumed["suppressed"], resumed["released"]) == (0, 1)
    elapsed = seconds_until_sent(fake_twilio, started)
    assert elapsed < RESUMED_WITHIN, f"the text went out {elapsed:.2f} s after the resume"
    await wait_for(lambda: db.fetchval("SELECT status = 'accepted' FROM conv_messages WHERE kind = 'first_sms'"))
    assert ops_status(stack)["texts_waiting"] == 0
    await asyncio.sleep(0.5)
    assert len(fake_twilio.messages()) == 1
    assert stack.worker.popen.pid == worker_pid and stack.worker.popen.poll() is None  # never restarted


async def test_the_just_recipes_pause_and_resume_the_running_worker(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    worker_pid = stack.worker.popen.pid
    paused = await asyncio.to_thread(just, "pause-sms", "--reason", "carrier filtering", "--by", "oncall")
    assert "outbound SMS paused" in paused.stdout

    await missed_call_is_held(stack, db, fake_twilio, 22)
    status = (await asyncio.to_thread(just, "pause-sms", "--status")).stdout
    assert "operator pause: PAUSED since" in status and "by oncall: carrier filtering" in status
    assert "texts waiting as paused: 1" in status
    assert ops_status(stack)["texts_waiting"] == 1  # the web sees what the CLI wrote

    await no_recheck_due_within(db, 10)  # `just` and Python start in 2-5 s, more on a loaded box
    resumed = await asyncio.to_thread(just, "resume-sms", "--yes")
    # measured from the command's exit (its start adds `uv run` and Python's start-up, not the worker's)
    elapsed = seconds_until_sent(fake_twilio, time.monotonic())
    assert "0 texts suppressed" in resumed.stdout and "1 waiting events released now" in resumed.stdout
    assert elapsed < RESUMED_WITHIN, f"the text went out {elapsed:.2f} s after `just resume-sms` returned"
    await wait_for(lambda: db.fetchval("SELECT status = 'accepted' FROM conv_messages WHERE kind = 'first_sms'"))
    await asyncio.sleep(0.5)
    assert len(fake_twilio.messages()) == 1
    assert stack.worker.popen.pid == worker_pid and stack.worker.popen.poll() is None

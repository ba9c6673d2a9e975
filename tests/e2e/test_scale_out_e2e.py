"""Two of each process against one Postgres, as Render runs `numInstances: 2` (issue #16, ADR 0018).

Web A runs `WEB_CONCURRENCY=2` (uvicorn's workers), web B one process; worker A runs
`WORKER_PROCESSES=2` (our supervisor), worker B one process; two jobs processes. Webhooks carry the
signature of the one public URL and land on either web, as behind Render's load balancer.

- every `/metrics` scrape, whichever web process answers, reports the requests all of them served;
- one call's webhook delivered 50 times to both webs at once: one text;
- 10 calls/s for 10 s while worker B is SIGKILLed and one of worker A's processes too (its supervisor
  starts it again): every missed call gets exactly one first SMS at the fake Twilio.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from nmc.observability.flusher import FLUSH_SECONDS
from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.chaos.accounting import texts_by_caller
from tests.conftest import TEST_DATABASE_URL, TWILIO_TOKEN
from tests.e2e.conftest import wait_for
from tests.e2e.test_first_sms_e2e import make_tenant
from tests.integration.test_observability import sample_value
from tests.processes import Process, free_port, reap

pytestmark = pytest.mark.e2e
PATH = "/webhooks/twilio/voice/dial-status"
START_TIMEOUT = 90.0  # eleven processes starting at once on a shared 2-core machine


@dataclass
class Fleet:
    public_url: str
    urls: list[str]  # web A, web B
    webs: list[Process]
    workers: list[Process]  # A: WORKER_PROCESSES=2, B: one process
    jobs: list[Process]

    def processes(self) -> list[Process]:
        return [*self.workers, *self.jobs, *self.webs]


def count_in_output(process: Process, needle: str) -> int:
    return process.output().count(needle)


def wait_for_count(process: Process, needle: str, count: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while count_in_output(process, needle) < count:
        if time.monotonic() > deadline or process.popen.poll() is not None:
            raise AssertionError(
                f"{process.recipe} printed {needle!r} fewer than {count} times:\n{process.output()[-3000:]}"
            )
        time.sleep(0.2)


def wait_healthy(url: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became healthy")


@pytest.fixture(scope="module")
def fleet(migrated_database: str, fake_twilio_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": TEST_DATABASE_URL,
        "PUBLIC_BASE_URL": urls[0],  # the one public URL every webhook is signed for
        "TWILIO_API_BASE_URL": fake_twilio_server.base_url,
        "LOG_LEVEL": "INFO",
        "OUTBOX_LEASE_SECONDS": "3",
    }
    # web and worker on smaller pools (the connection budget of eleven processes on one test server);
    # the jobs process keeps DB_POOL_SIZE=10: its Postgres broker holds a connection per queue (README)
    small_pools = {**env, "DB_POOL_SIZE": "5", "DB_HOT_POOL_SIZE": "5"}
    log_dir = tmp_path_factory.mktemp("e2e-scale-out-logs")
    running = Fleet(urls[0], urls, [], [], [])
    try:
        for port, processes in zip(ports, ("2", "1"), strict=True):
            web_env = {**small_pools, "PORT": str(port), "WEB_CONCURRENCY": processes}
            running.webs.append(Process("web", web_env, log_dir))
        for processes in ("2", "1"):
            running.workers.append(Process("worker", {**small_pools, "WORKER_PROCESSES": processes}, log_dir))
        running.jobs = [Process("jobs", env, log_dir) for _ in range(2)]
        wait_for_count(running.workers[0], "worker.started", 2)
        wait_for_count(running.workers[1], "worker.started", 1)
        for url in urls:
            wait_healthy(url)
        wait_for_count(running.webs[0], "Application startup complete", 2)  # /healthz answers from the first
        yield running
    finally:
        for process in running.processes():
            process.stop()
            reap(process)  # nothing of its process group outlives the module


async def scrape(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    return response.text


def fresh_connections() -> httpx.AsyncClient:
    """A new connection per request: the kernel hands each to either of web A's processes."""
    return httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def web_processes(web: Process) -> list[int]:
    """The server processes uvicorn started (with WEB_CONCURRENCY > 1, under its parent)."""
    return [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", web.output())]


def bytes_written(pid: int) -> int:
    """What the process wrote so far (responses, its log lines): grows only when it serves requests."""
    with open(f"/proc/{pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


async def test_every_scrape_reports_what_every_process_served(fleet: Fleet, db: asyncpg.Connection) -> None:
    labels = {"method": "GET", "path": "/api/tenant", "status_code": "401", "app_name": "nmc"}
    requests = 0
    web_a = web_processes(fleet.webs[0])
    assert len(web_a) == 2, web_a
    written_before = [bytes_written(pid) for pid in web_a]
    async with fresh_connections() as client:
        # The kernel hands each new connection to whichever of web A's processes accepts first: a burst
        # can land on one of them. Bursts go on until both served some (every request is counted).
        for _ in range(10):
            answers = await asyncio.gather(*(client.get(f"{fleet.urls[i % 2]}/api/tenant") for i in range(60)))
            assert {answer.status_code for answer in answers} == {401}
            requests += len(answers)
            served = [bytes_written(pid) - before for pid, before in zip(web_a, written_before, strict=True)]
            if all(served):
                break
        assert all(served), f"one of web A's processes served none of {requests} requests: {served}"

        async def total() -> float | None:
            text = await scrape(client, fleet.urls[0])
            return sample_value(text, "nmc_requests_total", **labels)

        # each process writes its increments within FLUSH_SECONDS; after that every scrape agrees
        async def settled() -> bool:
            return await total() == requests

        await wait_for(settled, timeout=3 * FLUSH_SECONDS)
        scrapes = await asyncio.gather(*(scrape(client, fleet.urls[i % 2]) for i in range(12)))
    assert [sample_value(text, "nmc_requests_total", **labels) for text in scrapes] == [requests] * 12
    assert {sample_value(text, "nmc_request_duration_seconds_count", **labels) for text in scrapes} == {requests}

    # the fleet itself, as the web sees it: three worker processes and two jobs processes beating (their
    # rows were emptied with the tables before this test; each beats again within a second)
    async def fleet_alive() -> bool:
        async with fresh_connections() as client:
            text = await scrape(client, fleet.urls[1])
        alive = [sample_value(text, "process_instances_alive", process=kind) for kind in ("worker", "jobs")]
        return alive == [3, 2]

    await wait_for(fleet_alive, timeout=10)


async def test_one_call_delivered_fifty_times_to_both_webs_gets_one_text(
    fleet: Fleet, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    number = await make_tenant(db, None, 16)  # type: ignore[arg-type]
    caller = "+15557160001"
    params = dial_outcome_params(new_call_sid(), caller, number)
    headers = signed_headers(f"{fleet.public_url}{PATH}", params, TWILIO_TOKEN)
    async with fresh_connections() as client:
        answers = await asyncio.gather(
            *(client.post(f"{fleet.urls[i % 2]}{PATH}", data=params, headers=headers) for i in range(50))
        )
    assert {answer.status_code for answer in answers} == {200}
    fake_twilio.wait_for_messages(1, timeout=15)
    await asyncio.sleep(2)  # a second text would have been sent by now
    assert len(texts_by_caller(fake_twilio.messages(), {caller}).get(caller, [])) == 1
    assert await db.fetchval("SELECT count(*) FROM conv_messages WHERE kind = 'first_sms'") == 1


def child_pids(supervised: Process) -> list[int]:
    """The worker processes a supervisor says it started, newest last."""
    return [int(pid) for pid in re.findall(r"worker\.process_started.*?\bpid\W+(\d+)", supervised.output())]


async def test_workers_killed_mid_load_lose_and_double_nothing(
    fleet: Fleet, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    number = await make_tenant(db, None, 17)  # type: ignore[arg-type]
    rate, seconds = 10, 10
    callers = [f"+1557217{index:04d}" for index in range(rate * seconds)]
    prepared = []
    for caller in callers:
        params = dial_outcome_params(new_call_sid(), caller, number)
        prepared.append((params, signed_headers(f"{fleet.public_url}{PATH}", params, TWILIO_TOKEN)))
    # Twilio answers in 0.3 s, so texts are in flight when a worker dies (its requests never reach Twilio).
    fake_twilio.outage(delay=0.3, drop_if_client_leaves=True)
    supervised, alone = fleet.workers
    [doomed_child, _] = child_pids(supervised)[-2:]

    async def load() -> list[int]:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=30) as client:
            tasks = []
            for index, (params, headers) in enumerate(prepared):
                await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
                url = f"{fleet.urls[index % 2]}{PATH}"
                tasks.append(asyncio.create_task(client.post(url, data=params, headers=headers)))
            return [answer.status_code for answer in await asyncio.gather(*tasks)]

    async def killer() -> None:
        await asyncio.sleep(3)
        await asyncio.to_thread(alone.stop, signal.SIGKILL)  # worker B: kill -9 its whole process group
        await asyncio.sleep(3)
        os.kill(doomed_child, signal.SIGKILL)  # one of worker A's processes: its supervisor starts another

    statuses, _ = await asyncio.gather(load(), killer())
    fake_twilio.heal()
    assert set(statuses) == {200}

    async def everyone_texted() -> bool:
        return set(texts_by_caller(fake_twilio.messages(), set(callers))) == set(callers)

    await wait_for(everyone_texted, timeout=40)
    await asyncio.sleep(1.5)  # a late duplicate still shows up
    texts = texts_by_caller(fake_twilio.messages(), set(callers))
    assert {caller: len(times) for caller, times in texts.items() if len(times) != 1} == {}
    assert len(texts) == len(callers)
    output = supervised.output()
    assert "worker.process_died" in output and str(doomed_child) in output
    assert len(child_pids(supervised)) >= 3  # the killed one was started again

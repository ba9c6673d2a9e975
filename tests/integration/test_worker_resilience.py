"""A dead worker's claims are taken over within seconds, a live worker's never; PgQueuer failures back
off; the worker's pools are created once; the web answers a fast 503 while the database is down."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from nmc import worker
from nmc.db import dispose_engine, hot_pool
from nmc.events.catalog import MessageStatusChanged, validated
from nmc.events.dispatcher import dispatch, set_dispatcher_id, sweep
from nmc.events.subscribers import subscriber
from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.conftest import TWILIO_TOKEN
from tests.processes import Process, free_port

ME = uuid4()


async def claimed_row(db: asyncpg.Connection, holder: UUID) -> UUID:
    """An undispatched row leased for 30 s by `holder`, as a worker leaves it mid-dispatch."""
    event = MessageStatusChanged(tenant_id=uuid4(), message_id=uuid4(), status="sent", correlation_id="c")
    await db.execute(
        "INSERT INTO outbox_events (id, event_name, event_version, payload, correlation_id, available_at, "
        "attempts, claimed_by) VALUES ($1, $2, 1, $3::jsonb, 'c', now() + interval '30 seconds', 1, $4)",
        event.event_id,
        event.name,
        json.dumps(validated(event)),
        holder,
    )
    return event.event_id


async def beat(db: asyncpg.Connection, worker_id: UUID, seconds_ago: float) -> None:
    await db.execute(
        "INSERT INTO worker_heartbeats (worker_id, process, host, pid, beat_at) "
        "VALUES ($1, 'worker', 'h', 1, now() - make_interval(secs => $2))",
        worker_id,
        seconds_ago,
    )


@pytest.fixture
def handled(handlers: None) -> list[MessageStatusChanged]:
    seen: list[MessageStatusChanged] = []

    @subscriber(MessageStatusChanged)
    async def record(event: MessageStatusChanged) -> None:
        seen.append(event)

    set_dispatcher_id(ME)
    return seen


async def reclaim_jobs(db: asyncpg.Connection, event_id: UUID) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM pgqueuer WHERE dedupe_key LIKE $1", f"outbox:{event_id}:reclaim:%"
    )
    return count


async def test_a_dead_workers_claim_is_reclaimed_at_once(db: asyncpg.Connection, handled: list[Any]) -> None:
    dead = uuid4()
    await beat(db, dead, seconds_ago=30)
    event_id = await claimed_row(db, dead)
    assert await sweep() == 1
    assert await reclaim_jobs(db, event_id) == 1
    await dispatch(event_id)
    assert [e.event_id for e in handled] == [event_id]
    row = await db.fetchrow("SELECT dispatched_at, claimed_by, attempts FROM outbox_events WHERE id = $1", event_id)
    assert row["dispatched_at"] is not None and row["claimed_by"] == ME and row["attempts"] == 2


async def test_a_live_workers_long_dispatch_is_never_taken(db: asyncpg.Connection, handled: list[Any]) -> None:
    alive = uuid4()
    await beat(db, alive, seconds_ago=0.5)
    event_id = await claimed_row(db, alive)
    assert await sweep() == 0
    await dispatch(event_id)
    assert handled == []
    assert await db.fetchval("SELECT claimed_by FROM outbox_events WHERE id = $1", event_id) == alive


async def test_a_claim_of_a_worker_that_never_beat_is_reclaimed(db: asyncpg.Connection, handled: list[Any]) -> None:
    event_id = await claimed_row(db, uuid4())  # killed before its first heartbeat reached the table
    assert await sweep() == 1
    await dispatch(event_id)
    assert [e.event_id for e in handled] == [event_id]


async def test_the_hot_pool_is_created_once_under_a_burst() -> None:
    await dispose_engine()
    pools = await asyncio.gather(*(hot_pool() for _ in range(50)))
    assert len({id(pool) for pool in pools}) == 1
    assert pools[0].get_max_size() == 10
    await dispose_engine()


async def test_a_failing_pgqueuer_run_is_logged_and_backed_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stopping = asyncio.Event()
    calls: list[float] = []

    async def failing(index: int, settings: Any, stopping_: asyncio.Event) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 3:
            stopping.set()
        raise RuntimeError("pgqueuer exploded")

    monkeypatch.setattr(worker, "_consume_until_lost", failing)
    monkeypatch.setattr(worker, "RECONNECT_BACKOFF_SECONDS", (0.05, 0.1, 0.2))
    await asyncio.wait_for(worker.run_consumer(0, None, stopping), 5)  # type: ignore[arg-type]
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.05 and calls[2] - calls[1] >= 0.1  # backed off, growing
    output = capsys.readouterr().out
    assert output.count("worker.consumer_restarting") == 3 and "pgqueuer exploded" in output


async def test_a_pgqueuer_run_that_raises_ends_the_consumer_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        shutdown = asyncio.Event()

        async def run(self, **_: Any) -> None:
            raise ValueError("bad dequeue")

    monkeypatch.setattr(worker, "build_consumer", lambda *a, **k: Broken())
    from nmc.settings import get_settings

    with pytest.raises(ValueError, match="bad dequeue"):
        await worker._consume_until_lost(0, get_settings(), asyncio.Event())


async def test_the_web_answers_503_while_the_database_is_unreachable(tmp_path: Path) -> None:
    """The real `just web` against a database nobody listens on: a fast 503, one line, no traceback."""
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": f"postgresql://127.0.0.1:{free_port()}/nmc",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    web = Process("web", env, tmp_path)
    try:
        web.wait_for_output("Application startup complete", timeout=60)
        url = f"http://127.0.0.1:{port}/webhooks/twilio/voice/dial-status"
        params = dial_outcome_params(new_call_sid(), "+15550001111", "+15550002222")
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.post(url, data=params, headers=signed_headers(url, params, TWILIO_TOKEN))
            # A forged delivery is refused before the database is asked for anything.
            forged = await client.post(url, data=params, headers=signed_headers(url, params, "not-the-token"))
    finally:
        web.stop()
    assert forged.status_code == 403
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["title"] == "Service unavailable"
    output = web.output()
    assert output.count("db.unavailable") == 1
    assert "Traceback" not in output and "http.unhandled_error" not in output

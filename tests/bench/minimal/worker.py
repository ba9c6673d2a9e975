"""The minimal pipeline's worker process: `python -m tests.bench.minimal.worker` (env as web.py, plus
TWILIO_ACCOUNT_SID, TWILIO_MESSAGING_SERVICE_SID, TWILIO_API_BASE_URL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import timedelta
from uuid import UUID

import aiohttp
import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.models import Job

from tests.bench.minimal.web import SEND_FIRST_SMS, _no_reset

LEASE_SECONDS = 30  # a row `sending` this long belongs to a dead worker
SWEEP_SECONDS = 2.0
BATCH_SIZE = 100

# Claimed and committed before the request: a second job for the row finds it taken (or accepted).
_CLAIM = f"""
    UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_at = now()
    WHERE id = $1 AND (state = 'pending'
                       OR (state = 'sending' AND claimed_at < now() - interval '{LEASE_SECONDS} seconds'))
    RETURNING caller, tenant_number, attempts
"""
_ACCEPTED = "UPDATE outbox SET state = 'accepted', twilio_sid = $2 WHERE id = $1"
_LOST = f"""
    SELECT id FROM outbox WHERE state <> 'accepted' AND created_at < now() - interval '5 seconds'
      AND (state = 'pending' OR claimed_at < now() - interval '{LEASE_SECONDS} seconds')
    LIMIT 500
"""


class Sender:
    def __init__(self, pool: asyncpg.Pool, http: aiohttp.ClientSession) -> None:
        self.pool = pool
        self.http = http
        account = os.environ["TWILIO_ACCOUNT_SID"]
        self.messages_url = f"{os.environ['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{account}/Messages.json"
        self.service = os.environ["TWILIO_MESSAGING_SERVICE_SID"]

    async def on_job(self, job: Job) -> None:
        assert job.payload is not None
        outbox_id = UUID(bytes=job.payload)
        row = await self.pool.fetchrow(_CLAIM, outbox_id)
        if row is None:
            return  # accepted already, or in flight at a live worker
        sid = await self.already_sent(row["caller"]) if row["attempts"] > 1 else None
        if sid is None:
            form = {"To": row["caller"], "MessagingServiceSid": self.service, "Body": "Sorry we missed your call!"}
            async with self.http.post(self.messages_url, data=form) as response:
                response.raise_for_status()  # PgQueuer logs it; the sweep re-enqueues after the lease
                sid = (await response.json())["sid"]
        await self.pool.execute(_ACCEPTED, outbox_id, sid)

    async def already_sent(self, caller: str) -> str | None:
        """A retry after a crash mid-request: Twilio may have the text already."""
        async with self.http.get(self.messages_url, params={"To": caller}) as response:
            response.raise_for_status()
            messages = (await response.json())["messages"]
        return messages[0]["sid"] if messages else None


async def sweep(pool: asyncpg.Pool, stopping: asyncio.Event) -> None:
    """Jobs lost with a crashed worker: enqueue their rows again (the dedupe key skips live ones)."""
    while not stopping.is_set():
        async with pool.acquire() as connection, connection.transaction():
            queries = Queries(AsyncpgDriver(connection))
            for row in await connection.fetch(_LOST):
                await queries.enqueue(SEND_FIRST_SMS, row["id"].bytes, dedupe_key=f"outbox:{row['id']}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), SWEEP_SECONDS)


async def main() -> None:
    database_url = os.environ["DATABASE_URL"]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10, reset=_no_reset)
    auth = aiohttp.BasicAuth(os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(total=5)) as http:
        sender = Sender(pool, http)
        connection = await asyncpg.connect(database_url)
        pgq = PgQueuer(AsyncpgDriver(connection))
        pgq.entrypoint(SEND_FIRST_SMS)(sender.on_job)

        def stop() -> None:
            stopping.set()
            pgq.shutdown.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        print("minimal.worker_started", flush=True)
        await asyncio.gather(
            pgq.run(
                dequeue_timeout=timedelta(seconds=2),
                batch_size=BATCH_SIZE,
                max_concurrent_tasks=2 * BATCH_SIZE,
                heartbeat_timeout=timedelta(seconds=5),
            ),
            sweep(pool, stopping),
        )
        await connection.close()
    await pool.close()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())

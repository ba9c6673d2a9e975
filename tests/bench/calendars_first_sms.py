"""`just bench calendars-first-sms [--calendars N --events N --rate R --seconds S]`: the first SMS while the
jobs process fully syncs N calendars (default 20 x 5,000 events), against the same load idle.

Web, worker and jobs run as real processes (as `just web` / `just worker` / `just jobs` start them) on a
fresh database, with the fake Twilio (its own process) and the fake Google (this process). Missed calls
are driven as in `just bench first-sms` (signed dial-status webhooks at a fixed rate, latency from the
webhook sent to the Messages request received). Run 1: idle. Run 2: the same rate, started together
with a forced full sync of every calendar. Goal (issue #11): P95 during the syncs within 20 % of idle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg

from tests.bench import common
from tests.bench.calendars import connect_directly, fill_calendar
from tests.bench.common import fresh_database, summary, table
from tests.bench.first_sms import Scenario, collect, drive, setup
from tests.conftest import MESSAGING_SERVICE_SID, TWILIO_SID, TWILIO_TOKEN
from tests.fakes.google import FakeGoogle
from tests.fakes.twilio_api import FakeTwilio
from tests.processes import Process


async def prepare(database_url: str, google: FakeGoogle, calendars: int, events: int) -> list[UUID]:
    db = await asyncpg.connect(database_url)
    try:
        tenant_id = await db.fetchval("SELECT id FROM tenants LIMIT 1")
        ids = []
        for n in range(calendars):
            resource_id = await db.fetchval(
                "INSERT INTO sched_resources (id, tenant_id, name, kind, active, weekly_hours, created_at, updated_at) "
                "VALUES ($1, $2, $3, 'technician', true, '{}'::jsonb, now(), now()) RETURNING id",
                uuid4(),
                tenant_id,
                f"Tech {n}",
            )
            fill_calendar(google, f"cal{n}", events, datetime.now(UTC), 88, seed=n)
            ids.append(await connect_directly(google, tenant_id, resource_id, f"cal{n}"))
        return ids
    finally:
        await db.close()


async def queue_full_syncs(connection_ids: list[UUID]) -> None:
    from nmc.calendars import queue_sync

    for connection_id in connection_ids:
        await queue_sync(connection_id, full=True, forced=True)


async def wait_synced(database_url: str, connection_ids: list[UUID], since: datetime, timeout: float) -> float:
    db = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout:
            done = await db.fetchval(
                "SELECT count(*) FROM calendar_connections WHERE id = ANY($1::uuid[]) AND last_full_sync_at > $2",
                connection_ids,
                since,
            )
            if done == len(connection_ids):
                break
            await asyncio.sleep(0.2)
        return time.perf_counter() - started
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calendars", type=int, default=20)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=20.0, help="missed calls per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    common.BENCH_DATABASE = "nmc_bench_calendars_sms"
    database_url = fresh_database()
    with (
        FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN, collect_garbage=False) as fake,
        FakeGoogle() as google,
    ):
        os.environ.update({"DATABASE_URL": database_url, **google.settings})
        from nmc.settings import get_settings

        get_settings.cache_clear()
        stack = setup(database_url, fake)
        jobs_env = {**stack.env, **google.settings, "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
                    "LOG_LEVEL": "INFO"}  # fmt: skip
        jobs = Process("jobs", jobs_env, stack.log_dir)
        rows = []
        try:
            connection_ids = asyncio.run(prepare(database_url, google, args.calendars, args.events))
            time.sleep(3)  # the jobs process is up
            for run, syncing in enumerate((False, True)):
                fake.reset()
                asyncio.run(drive(stack, Scenario("warmup", args.rate, 2), run + 100))
                time.sleep(2)
                fake.reset()
                since = datetime.now(UTC)
                if syncing:
                    asyncio.run(queue_full_syncs(connection_ids))
                scenario = Scenario("during full syncs" if syncing else "idle", args.rate, args.seconds)
                sent_at, total, achieved, errors = asyncio.run(drive(stack, scenario, run))
                latencies, lost, duplicates, _ = collect(fake, sent_at, wait_seconds=30)
                sync_seconds = asyncio.run(wait_synced(database_url, connection_ids, since, 300)) if syncing else 0.0
                stats = summary(latencies)
                rows.append(
                    {
                        "first SMS": scenario.name,
                        "calls": total,
                        "rate/s": achieved,
                        "P50 ms": stats["p50"],
                        "P95 ms": stats["p95"],
                        "P99 ms": stats["p99"],
                        "lost": lost,
                        "duplicates": duplicates,
                        "webhook errors": errors,
                        "syncs done after s": sync_seconds,
                    }
                )
        finally:
            jobs.stop()
            stack.stop()
    print(f"\n{args.calendars} calendars x {args.events} events, full syncs in the jobs process\n")
    print(table(rows, list(rows[0])))
    idle, busy = rows[0]["P95 ms"], rows[1]["P95 ms"]
    assert isinstance(idle, float) and isinstance(busy, float)
    print(f"\nP95 during the syncs / idle: {busy / idle:.2f} (goal ≤ 1.20); logs in {stack.log_dir}")


if __name__ == "__main__":
    main()

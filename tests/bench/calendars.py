"""`just bench calendars [--events N --changes N --blocks N --searches N]`: calendar sync and availability.

On a fresh database, against the fake Google (in this process, on loopback):

1. Full sync of one calendar with N events (default 5,000) spread over the 90-day window (a tenth all-day,
   a tenth free or declined, some recurring instances): the sync code the jobs process runs (`run_sync`),
   every page read, then one transaction. Printed: seconds, events/s, busy blocks written.
2. Incremental sync of N changes (default 50: moves, cancellations, new events) with the sync token.
3. Jobber: full sync of one account with N visits (default 2,000; `--visits`) over the window, spread over
   5 technicians mapped to 5 resources, pages of 40 as the jobs process reads them — once with the fake's
   cost bucket as Jobber has it (10,000 points, 500/s restored: the waits are Jobber's limit, not ours), once
   with an unlimited bucket (our side alone) — then the window re-pulled after 50 changes (moves, deletions,
   completions).
4. Availability over 7 days for a resource with N synced busy blocks (default 2,000 of 5 minutes on a
   5-minute grid: an around-the-clock technician with gaps left for a 15-minute job) in those days:
   `GET /api/availability` on the real web process (as `just web` starts it), one client, back to back.
   Goal: P95 ≤ 10 ms.

The fake answers from the same process (its JSON costs are in the sync figures): the figures are an upper
bound for our side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx

from tests.bench import common
from tests.bench.common import BenchStack, fresh_database, summary, table
from tests.conftest import run_nmc
from tests.fakes.clerk import FakeClerk
from tests.fakes.google import FakeGoogle
from tests.fakes.jobber import FakeJobber

ORG = "org_bench_calendars"
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def fill_calendar(google: FakeGoogle, calendar_id: str, count: int, start: datetime, days: float, seed: int) -> None:
    rng = random.Random(seed)
    made = 0
    while made < count:
        at = start + timedelta(minutes=15 * rng.randrange(int(days * 24 * 4)))
        kind = rng.random()
        if kind < 0.1:
            day = at.date()
            google.add_event(calendar_id, start=day, end=day + timedelta(days=1), summary="Day off")
        elif kind < 0.15:
            google.add_event(calendar_id, start=at, end=at + timedelta(hours=1), transparency="transparent")
        elif kind < 0.2:
            attendees = [{"email": "o@example.com", "self": True, "responseStatus": "declined"}]
            google.add_event(calendar_id, start=at, end=at + timedelta(hours=1), attendees=attendees)
        elif kind < 0.25 and made + 5 <= count:
            google.add_recurring(calendar_id, first_start=at, duration=timedelta(minutes=30), count=5)
            made += 4
        else:
            length = timedelta(minutes=rng.choice((15, 30, 45, 60, 90)))
            google.add_event(calendar_id, start=at, end=at + length, summary=f"Job {made}")
        made += 1


async def connect_directly(google: FakeGoogle, tenant_id: UUID, resource_id: UUID, calendar_id: str) -> UUID:
    """A connection as the OAuth callback stores it (the consent itself is not what is measured)."""
    from nmc.calendars import keys, store
    from nmc.calendars.google import GOOGLE
    from nmc.db import raw_connection, session_scope

    grant = await GOOGLE.exchange_code(google.issue_code(), "")
    assert grant.refresh_token
    async with session_scope() as session:
        return await store.upsert(
            await raw_connection(session),
            id=uuid4(),
            tenant_id=tenant_id,
            resource_id=resource_id,
            provider="google",
            calendar_id=calendar_id,
            connected_by="bench",
            scopes=" ".join(grant.scopes),
            refresh_token_encrypted=keys.encrypt(grant.refresh_token),
            access_token_encrypted=keys.encrypt(grant.access_token),
            access_token_expires_at=grant.expires_at,
        )


async def create(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    response = await client.post(path, json=body)
    response.raise_for_status()
    return str(response.json()["id"])


async def syncs(
    google: FakeGoogle, client: httpx.AsyncClient, tenant_id: UUID, args: argparse.Namespace
) -> list[dict[str, object]]:
    from nmc.calendars import run_sync

    hours = {day: [["00:00", "24:00"]] for day in EVERY_DAY}
    resource = UUID(await create(client, "/api/resources", {"name": "Synced", "weekly_hours": hours}))
    connection_id = await connect_directly(google, tenant_id, resource, "bench")
    fill_calendar(google, "bench", args.events, datetime.now(UTC), 88, seed=1)
    started = time.perf_counter()
    full = await run_sync(connection_id, full=True, forced=True)
    full_seconds = time.perf_counter() - started
    assert full.outcome == "synced", full.line()

    rng = random.Random(2)
    events = [e for e in google.events("bench") if e.get("status") != "cancelled"]
    for n in range(args.changes):
        pick = rng.choice(events)
        if n % 3 == 0:
            google.cancel_event("bench", pick["id"])
        elif n % 3 == 1 and "dateTime" in pick["start"]:
            at = datetime.fromisoformat(pick["start"]["dateTime"]) + timedelta(minutes=30)
            google.update_event("bench", pick["id"], start=at, end=at + timedelta(minutes=45))
        else:
            at = datetime.now(UTC) + timedelta(days=rng.uniform(1, 80))
            google.add_event("bench", start=at, end=at + timedelta(hours=1))
    started = time.perf_counter()
    incremental = await run_sync(connection_id, forced=True)
    incremental_seconds = time.perf_counter() - started
    assert incremental.outcome == "synced" and incremental.mode == "incremental", incremental.line()
    return [
        {
            "sync": f"full, {args.events} events",
            "pages": full.pages,
            "events read": full.events,
            "blocks written": full.blocks_changed,
            "seconds": full_seconds,
            "events/s": full.events / full_seconds,
        },
        {
            "sync": f"incremental, {args.changes} changes",
            "pages": incremental.pages,
            "events read": incremental.events,
            "blocks written": incremental.blocks_changed + incremental.blocks_deleted,
            "seconds": incremental_seconds,
            "events/s": incremental.events / incremental_seconds,
        },
    ]


async def jobber_syncs(
    jobber: FakeJobber, client: httpx.AsyncClient, tenant_id: UUID, args: argparse.Namespace
) -> list[dict[str, object]]:
    """A Jobber account as the OAuth callback stores it, its users mapped as PATCH .../jobber-users does."""
    from nmc.calendars import keys, run_sync, store
    from nmc.calendars.jobber import JOBBER, token_expiry
    from nmc.db import raw_connection, session_scope

    hours = {day: [["00:00", "24:00"]] for day in EVERY_DAY}
    account = jobber.add_account("Bench Jobber", timezone="Etc/GMT")
    users = [jobber.add_user(account, f"Tech {n}") for n in range(5)]
    resources = [UUID(await create(client, "/api/resources", {"name": f"Tech {n}", "weekly_hours": hours}))
                 for n in range(5)]  # fmt: skip
    grant = jobber.grant_tokens(account)
    async with session_scope() as session:
        connection = await raw_connection(session)
        connection_id = await store.upsert(
            connection, id=uuid4(), tenant_id=tenant_id, resource_id=resources[0], provider="jobber",
            calendar_id=account, connected_by="bench", scopes="",
            refresh_token_encrypted=keys.encrypt(grant["refresh_token"]),
            access_token_encrypted=keys.encrypt(grant["access_token"]),
            access_token_expires_at=token_expiry(grant["access_token"]),
        )  # fmt: skip
        for user, resource in zip(users, resources, strict=True):
            await store.map_jobber_user(connection, connection_id, tenant_id, user, resource, None)
    visits = jobber.seed_visits(account, args.visits, users, datetime.now(UTC) + timedelta(hours=1), 85)
    rows = []
    for label, unlimited in (("as Jobber throttles", False), ("unlimited bucket: our side", True)):
        async with session_scope() as session:
            await (await raw_connection(session)).execute(
                "DELETE FROM sched_busy_blocks WHERE source = 'jobber' AND tenant_id = $1", tenant_id
            )
        jobber.set_bucket(account, maximum=10**9 if unlimited else 10000, restore_rate=10**9 if unlimited else 500)
        jobber.fill_bucket(account)
        JOBBER.buckets.clear()
        calls_before = jobber.call_count("Visits", account=account)
        started = time.perf_counter()
        full = await run_sync(connection_id, full=True, forced=True)
        seconds = time.perf_counter() - started
        assert full.outcome == "synced", full.line()
        throttled = sum(1 for c in jobber.calls("Visits", account=account)[calls_before:] if c.throttled)
        rows.append(
            {"sync": f"jobber full, {args.visits} visits ({label})", "pages": full.pages, "events read": full.events,
             "blocks written": full.blocks_changed, "seconds": seconds, "events/s": full.events / seconds,
             "THROTTLED answers": throttled}
        )  # fmt: skip
    rng = random.Random(4)
    for n, visit in enumerate(rng.sample(visits, min(50, len(visits)))):
        if n % 3 == 0:
            jobber.delete_visit(visit, notify=False)
        elif n % 3 == 1:
            jobber.complete_visit(visit, notify=False)
        else:
            at = datetime.now(UTC) + timedelta(days=rng.uniform(1, 80))
            jobber.update_visit(visit, start=at, end=at + timedelta(hours=1), notify=False)
    started = time.perf_counter()
    again = await run_sync(connection_id, forced=True)
    seconds = time.perf_counter() - started
    assert again.outcome == "synced", again.line()
    rows.append({"sync": "jobber window re-pull, 50 changes (unlimited bucket)", "pages": again.pages,
                 "events read": again.events, "blocks written": again.blocks_changed + again.blocks_deleted,
                 "seconds": seconds, "events/s": again.events / seconds, "THROTTLED answers": 0})  # fmt: skip
    return rows


async def availability(
    google: FakeGoogle, client: httpx.AsyncClient, db: asyncpg.Connection, tenant_id: UUID, args: argparse.Namespace
) -> dict[str, object]:
    from nmc.calendars import run_sync

    hours = {day: [["00:00", "24:00"]] for day in EVERY_DAY}
    resource = await create(client, "/api/resources", {"name": "Busy", "weekly_hours": hours})
    job = {"name": "Quick visit", "duration_minutes": 15, "min_notice_minutes": 0}
    job_type_id = await create(client, "/api/job-types", job)
    start = (datetime.now(UTC) + timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0)
    rng = random.Random(3)
    for n in range(args.blocks):
        at = start + timedelta(minutes=5 * rng.randrange(7 * 24 * 12))
        google.add_event("busy", start=at, end=at + timedelta(minutes=5), summary=f"b{n}")
    connection_id = await connect_directly(google, tenant_id, UUID(resource), "busy")
    report = await run_sync(connection_id, full=True, forced=True)
    assert report.outcome == "synced"
    synced = await db.fetchval(
        "SELECT count(*) FROM sched_busy_blocks WHERE resource_id = $1 AND during && tstzrange($2, $3)",
        UUID(resource), start, start + timedelta(days=7),
    )  # fmt: skip
    await db.execute("ANALYZE")
    params = {"resource_id": resource, "job_type_id": job_type_id, "start": start.isoformat(),
              "end": (start + timedelta(days=7)).isoformat()}  # fmt: skip
    latencies: list[float] = []
    slots = 0
    for attempt in range(args.searches + 20):
        sent = time.perf_counter()
        response = await client.get("/api/availability", params=params)
        elapsed = (time.perf_counter() - sent) * 1000
        response.raise_for_status()
        if attempt >= 20:
            latencies.append(elapsed)
        slots = len(response.json()["resources"][0]["slots"])
    stats = summary(latencies)
    handler = await search_in_process(tenant_id, UUID(job_type_id), UUID(resource), start, args.searches)
    return {
        "scenario": f"availability: 7 days, {synced} synced busy blocks, 1 client",
        "in-process P50 ms": handler["p50"],
        "in-process P95 ms": handler["p95"],
        "searches": len(latencies),
        "open starts found": slots,
        "P50 ms": stats["p50"],
        "P95 ms": stats["p95"],
        "P99 ms": stats["p99"],
        "max ms": stats["max"],
    }


async def search_in_process(
    tenant_id: UUID, job_type_id: UUID, resource_id: UUID, start: datetime, searches: int
) -> dict[str, float]:
    """The same search without HTTP, Clerk and uvicorn: scheduling's own cost (its query and the Python)."""
    from nmc.db import session_scope
    from nmc.scheduling import search_availability

    latencies = []
    async with session_scope() as session:  # one connection, as a pooled web process has (no connect in the loop)
        for attempt in range(searches + 20):
            sent = time.perf_counter()
            await search_availability(
                session, tenant_id, job_type_id=job_type_id, start=start, end=start + timedelta(days=7),
                resource_ids=[resource_id],
            )  # fmt: skip
            if attempt >= 20:
                latencies.append((time.perf_counter() - sent) * 1000)
    return summary(latencies)


async def run(
    stack: BenchStack,
    clerk: FakeClerk,
    google: FakeGoogle,
    jobber: FakeJobber,
    database_url: str,
    args: argparse.Namespace,
) -> tuple[list[dict[str, object]], list[dict[str, object]], dict[str, object]]:
    from nmc.db import dispose_engine

    token = clerk.mint(org_id=ORG, exp_in=3600)
    db = await asyncpg.connect(database_url)
    tenant_id = await db.fetchval("SELECT id FROM tenants WHERE clerk_org_id = $1", ORG)
    try:
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            sync_rows = await syncs(google, client, tenant_id, args)
            jobber_rows = await jobber_syncs(jobber, client, tenant_id, args)
            searching = await availability(google, client, db, tenant_id, args)
    finally:
        await db.close()
        await dispose_engine()
    return sync_rows, jobber_rows, searching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--visits", type=int, default=2000)
    args = parser.parse_args()
    common.BENCH_DATABASE = "nmc_bench_calendars"
    database_url = fresh_database()
    with FakeClerk() as clerk, FakeGoogle() as google, FakeJobber() as jobber:
        env = {
            "DATABASE_URL": database_url,
            "CLERK_JWKS_URL": clerk.jwks_url,
            "CLERK_JWT_ISSUER": clerk.issuer,
            **google.settings,
            **jobber.settings,
            "CALENDAR_SYNC_FUTURE_DAYS": "90",
        }
        os.environ.update(env)
        from nmc.settings import get_settings

        get_settings.cache_clear()
        run_nmc(
            "tenants", "create", "--name", "Bench Calendars", "--number", "+15553340000",
            "--forward-to", "+15553349999", "--timezone", "Etc/GMT", "--clerk-org", ORG, env=env,
        )  # fmt: skip
        stack = BenchStack(env)
        try:
            sync_rows, jobber_rows, searching = asyncio.run(run(stack, clerk, google, jobber, database_url, args))
        finally:
            stack.stop()
    print()
    print(table(sync_rows, list(sync_rows[0])))
    print()
    print(table(jobber_rows, list(jobber_rows[0])))
    print()
    print(table([searching], list(searching)))


if __name__ == "__main__":
    main()

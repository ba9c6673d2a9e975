"""`just bench booking [--clients N --seconds S --think-ms T]`: racing bookings and availability search.

Starts the fake Clerk issuer, the web and the worker as real processes (as `just web` / `just worker`)
on a fresh database, and talks to them over real HTTP with Clerk session tokens.

1. Race: N clients (default 50) for S seconds (default 30) book one-hour jobs on three technicians.
   All clients aim at the same day, which moves on every second, at random starts on the 15-minute
   grid of 08:00-16:00: the slots overlap, so most attempts collide. A quarter of the attempts hold
   the slot first and book the hold. Each client waits a random 0-2T ms between attempts (T default
   1000 ms: fifty people each trying about once a second). Measured: POST /api/bookings as the
   client sees it (P50/P95/P99), 201s and 409s, the web's own `booking_post_p95_ms`, then double
   bookings counted by SQL (overlapping confirmed bookings of one resource; must be 0).
2. Availability: one client searches, back to back, 7 days of a technician on call around the clock
   with 500 busy blocks of 15-45 minutes (a 30-minute job plus a 15-minute buffer).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.bench import common
from tests.bench.common import BenchStack, fresh_database, summary, table
from tests.conftest import run_nmc
from tests.fakes.clerk import FakeClerk

ORG = "org_bench_booking"
TECHNICIANS = ("Ana", "Bea", "Cy")
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
GRID = [timedelta(hours=8, minutes=15 * i) for i in range(33)]  # 08:00 … 16:00 starts of a 1-hour job
BUSY_BLOCKS = 500
SEARCH_DAYS = 7

DOUBLE_BOOKINGS = """
    SELECT count(*) FROM sched_bookings a JOIN sched_bookings b
      ON a.resource_id = b.resource_id AND a.id < b.id
     AND a.status = 'confirmed' AND b.status = 'confirmed'
     AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at)
"""
OVERLAPPING_ALLOCATIONS = """
    SELECT count(*) FROM sched_allocations a JOIN sched_allocations b
      ON a.resource_id = b.resource_id AND a.id < b.id AND a.during && b.during
"""


@dataclass
class RaceResult:
    clients: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    created: int = 0
    conflicts: int = 0
    errors: int = 0
    holds: int = 0
    elapsed: float = 0.0
    double_bookings: int = -1
    confirmed_rows: int = -1
    server_p95_ms: float = float("nan")

    def row(self) -> dict[str, object]:
        stats = summary(self.latencies_ms)
        return {
            "scenario": f"{self.clients} clients racing, {self.seconds:g} s",
            "booking POSTs": len(self.latencies_ms),
            "POSTs/s": len(self.latencies_ms) / self.elapsed if self.elapsed else 0.0,
            "P50 ms": stats["p50"],
            "P95 ms": stats["p95"],
            "P99 ms": stats["p99"],
            "max ms": stats["max"],
            "201": self.created,
            "409": self.conflicts,
            "errors": self.errors,
            "double bookings (SQL)": self.double_bookings,
            "server booking_post_p95_ms": self.server_p95_ms,
        }


def midnight_in(days: int) -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=days)


async def create(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    response = await client.post(path, json=body)
    response.raise_for_status()
    return str(response.json()["id"])


async def setup(client: httpx.AsyncClient) -> tuple[list[str], str]:
    """Three technicians working 08:00-17:00 every day and a one-hour job type."""
    hours = {day: [["08:00", "17:00"]] for day in EVERY_DAY}
    technicians = [await create(client, "/api/resources", {"name": n, "weekly_hours": hours}) for n in TECHNICIANS]
    job_type = await create(
        client, "/api/job-types", {"name": "Repair", "duration_minutes": 60, "min_notice_minutes": 0}
    )
    return technicians, job_type


async def race(
    client: httpx.AsyncClient, resources: list[str], job_type_id: str, clients: int, seconds: float, think_ms: float
) -> RaceResult:
    result = RaceResult(clients, seconds)
    first_day = midnight_in(3)
    started = time.perf_counter()
    deadline = started + seconds

    async def one_client(index: int) -> None:
        rng = random.Random(index)
        await asyncio.sleep(rng.uniform(0, think_ms / 1000))
        while time.perf_counter() < deadline:
            day = first_day + timedelta(days=int(time.perf_counter() - started))
            start = (day + rng.choice(GRID)).isoformat()
            slot = {"resource_id": rng.choice(resources), "job_type_id": job_type_id, "start": start}
            body: dict[str, Any] = slot
            if rng.random() < 0.25:
                try:
                    held = await client.post("/api/holds", json=slot)
                except httpx.TransportError:
                    result.errors += 1
                    continue
                result.holds += 1
                if held.status_code != 201:
                    result.conflicts += held.status_code == 409
                    result.errors += held.status_code != 409
                    await asyncio.sleep(rng.uniform(0, 2 * think_ms) / 1000)
                    continue
                body = {"hold_id": held.json()["id"]}
            sent = time.perf_counter()
            try:
                response = await client.post("/api/bookings", json=body)
            except httpx.TransportError:
                result.errors += 1
                continue
            result.latencies_ms.append((time.perf_counter() - sent) * 1000)
            if response.status_code == 201:
                result.created += 1
            elif response.status_code == 409:
                result.conflicts += 1
            else:
                result.errors += 1
            await asyncio.sleep(rng.uniform(0, 2 * think_ms) / 1000)

    await asyncio.gather(*(one_client(i) for i in range(clients)))
    result.elapsed = time.perf_counter() - started
    return result


async def search(client: httpx.AsyncClient, connection: asyncpg.Connection, requests: int) -> dict[str, object]:
    """A technician on call around the clock with 500 busy blocks (15-45 min) in the 7 searched days."""
    hours = {day: [["00:00", "24:00"]] for day in EVERY_DAY}
    resource_id = await create(client, "/api/resources", {"name": "On call", "weekly_hours": hours})
    job = {"name": "Visit", "duration_minutes": 30, "buffer_after_minutes": 15, "min_notice_minutes": 0}
    job_type_id = await create(client, "/api/job-types", job)
    start = midnight_in(60)
    end = start + timedelta(days=SEARCH_DAYS)
    rng = random.Random(7)
    for _ in range(BUSY_BLOCKS):
        at = start + timedelta(minutes=15 * rng.randrange(SEARCH_DAYS * 24 * 4))
        length = timedelta(minutes=rng.choice((15, 30, 45)))
        block = {"resource_id": resource_id, "start": at.isoformat(), "end": (at + length).isoformat()}
        await create(client, "/api/busy-blocks", block)
    await connection.execute("ANALYZE")  # tables just filled have no statistics yet (autovacuum would add them)
    params = {
        "resource_id": resource_id,
        "job_type_id": job_type_id,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }
    latencies: list[float] = []
    slots = 0
    for attempt in range(requests + 20):
        sent = time.perf_counter()
        response = await client.get("/api/availability", params=params)
        elapsed = (time.perf_counter() - sent) * 1000
        response.raise_for_status()
        if attempt >= 20:  # the first ones warm the process up
            latencies.append(elapsed)
        slots = len(response.json()["resources"][0]["slots"])
    stats = summary(latencies)
    return {
        "scenario": f"availability: {SEARCH_DAYS} days, {BUSY_BLOCKS} busy blocks, 1 client",
        "searches": len(latencies),
        "open starts found": slots,
        "P50 ms": stats["p50"],
        "P95 ms": stats["p95"],
        "P99 ms": stats["p99"],
        "max ms": stats["max"],
    }


def server_p95(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("booking_post_p95_ms "):
            return float(line.split()[1])
    return float("nan")


async def run(
    stack: BenchStack, clerk: FakeClerk, database_url: str, args: argparse.Namespace
) -> tuple[RaceResult, dict[str, object]]:
    token = clerk.mint(org_id=ORG, exp_in=3600)
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them under a request.
    limits = httpx.Limits(
        max_connections=args.clients + 10, max_keepalive_connections=args.clients + 10, keepalive_expiry=4.0
    )
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=30
    ) as client:
        resources, job_type_id = await setup(client)
        await race(client, resources, job_type_id, min(args.clients, 10), 2, args.think_ms)  # warm-up
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute("TRUNCATE sched_bookings, sched_holds, sched_allocations")
            result = await race(client, resources, job_type_id, args.clients, args.seconds, args.think_ms)
            result.server_p95_ms = server_p95((await client.get("/metrics")).text)
            result.double_bookings = await connection.fetchval(DOUBLE_BOOKINGS)
            result.confirmed_rows = await connection.fetchval(
                "SELECT count(*) FROM sched_bookings WHERE status = 'confirmed'"
            )
            assert await connection.fetchval(OVERLAPPING_ALLOCATIONS) == 0
            searching = await search(client, connection, args.searches)
        finally:
            await connection.close()
    return result, searching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--think-ms", type=float, default=1000.0, help="mean pause between a client's attempts")
    parser.add_argument("--searches", type=int, default=500)
    args = parser.parse_args()
    # Its own database: `just bench first-sms` recreates `nmc_bench`, and the two may run side by side.
    common.BENCH_DATABASE = "nmc_bench_booking"
    database_url = fresh_database()
    with FakeClerk() as clerk:
        env = {"DATABASE_URL": database_url, "CLERK_JWKS_URL": clerk.jwks_url, "CLERK_JWT_ISSUER": clerk.issuer}
        run_nmc(
            "tenants", "create", "--name", "Bench Booking", "--number", "+15553330000",
            "--forward-to", "+15553339999", "--timezone", "Etc/GMT", "--clerk-org", ORG, env=env,
        )  # fmt: skip
        stack = BenchStack(env)
        try:
            result, searching = asyncio.run(run(stack, clerk, database_url, args))
        finally:
            stack.stop()
    print(
        f"\nbooking POST over HTTP: {args.clients} clients, random 0-{2 * args.think_ms:g} ms pauses, "
        f"{result.holds} holds taken first; {result.confirmed_rows} confirmed bookings in SQL "
        f"for {result.created} 201s\n"
    )
    print(table([result.row()], list(result.row())))
    print()
    print(table([searching], list(searching)))


if __name__ == "__main__":
    main()

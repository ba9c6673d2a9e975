"""`just bench inbox [--threads N --messages-per-thread M --requests R]`: the inbox list under a big tenant.

Seeds (with generate_series, in seconds) a tenant with 10,000 threads and 100,000 messages plus two
noise tenants of the same size, starts the web as `just web` starts it (with the fake Clerk issuer),
and measures `GET /api/threads` over real HTTP with a Clerk session token: the first page, pages deep
behind a cursor, the status and unread filters, and four clients at once. Latency is the client's:
request sent → response read, on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tests.bench.common import BenchStack, fresh_database, summary, table
from tests.conftest import run_nmc
from tests.fakes.clerk import FakeClerk

TENANT_NUMBER = "+15553330000"
ORG = "org_bench_inbox"
NOISE_TENANTS = 2
PAGE = 50

# Threads over the last 90 days; one caller each (a caller has at most one current thread).
# Status mix: 60% open, 25% closed, 10% booked, 5% opted out; 20% have unread messages.
_SEED_THREADS = """
    INSERT INTO conv_threads (id, tenant_id, caller, tenant_number, status, created_at, last_activity_at,
                              unread_count, last_message_preview, last_inbound_at)
    SELECT gen_random_uuid(), $1, '+1' || lpad(($3::bigint * 10000000 + i)::text, 10, '0'), $2,
           CASE WHEN i % 20 < 12 THEN 'open' WHEN i % 20 < 17 THEN 'closed'
                WHEN i % 20 < 19 THEN 'booked' ELSE 'opted_out' END,
           now() - make_interval(secs => (i * 777) % 7776000 + 3600),
           now() - make_interval(secs => (i * 777) % 7776000),
           CASE WHEN i % 5 = 0 THEN 1 + i % 3 ELSE 0 END,
           'Hi, is this still available for Thursday afternoon? Thanks ' || i,
           now() - make_interval(secs => (i * 777) % 7776000)
    FROM generate_series(1, $4::int) AS i
"""
_SEED_MESSAGES = """
    INSERT INTO conv_messages (id, tenant_id, thread_id, idempotency_key, direction, kind, to_number, from_number,
                               body, status, twilio_sid, created_at, sent_at)
    SELECT gen_random_uuid(), t.tenant_id, t.id, NULL,
           CASE WHEN n % 2 = 0 THEN 'outbound' ELSE 'inbound' END,
           CASE WHEN n = 0 THEN 'first_sms' WHEN n % 2 = 0 THEN 'reply' ELSE 'inbound' END,
           CASE WHEN n % 2 = 0 THEN t.caller ELSE t.tenant_number END,
           CASE WHEN n % 2 = 0 THEN t.tenant_number ELSE t.caller END,
           repeat('A realistic text message body with a few words. ', 1 + n % 4),
           CASE WHEN n % 2 = 0 THEN 'delivered' ELSE 'received' END,
           'SM' || md5(t.id::text || n),
           t.created_at + make_interval(mins => n), t.created_at + make_interval(mins => n)
    FROM conv_threads t CROSS JOIN generate_series(0, $2::int - 1) AS n
    WHERE t.tenant_id = $1
"""


async def seed(database_url: str, threads: int, per_thread: int) -> dict[str, int]:
    connection = await asyncpg.connect(database_url)
    try:
        tenants = await connection.fetch(
            "SELECT t.id, n.twilio_number FROM tenants t JOIN tenant_phone_numbers n ON n.tenant_id = t.id "
            "ORDER BY n.twilio_number = $1 DESC",
            TENANT_NUMBER,
        )
        for index, tenant in enumerate(tenants):
            await connection.execute(_SEED_THREADS, tenant["id"], tenant["twilio_number"], index + 1, threads)
            await connection.execute(_SEED_MESSAGES, tenant["id"], per_thread)
        await connection.execute("ANALYZE conv_threads; ANALYZE conv_messages")
        counts = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM conv_threads t JOIN tenant_phone_numbers n USING (tenant_id)"
            "        WHERE n.twilio_number = $1) AS threads,"
            "       (SELECT count(*) FROM conv_messages m JOIN tenant_phone_numbers n USING (tenant_id)"
            "        WHERE n.twilio_number = $1) AS messages,"
            "       (SELECT count(*) FROM conv_threads) AS all_threads,"
            "       (SELECT count(*) FROM conv_messages) AS all_messages",
            TENANT_NUMBER,
        )
        return dict(counts)
    finally:
        await connection.close()


@dataclass
class Measured:
    name: str
    latencies_ms: list[float]
    errors: int

    def row(self) -> dict[str, object]:
        stats = summary(self.latencies_ms)
        return {
            "GET /api/threads": self.name,
            "requests": len(self.latencies_ms),
            "P50 ms": stats["p50"],
            "P95 ms": stats["p95"],
            "P99 ms": stats["p99"],
            "max ms": stats["max"],
            "errors": self.errors,
        }


Request = Callable[[httpx.AsyncClient], Awaitable[tuple[float, str | None]]]


def page_request(params: dict[str, Any]) -> Request:
    async def one(client: httpx.AsyncClient) -> tuple[float, str | None]:
        started = time.perf_counter()
        response = await client.get("/api/threads", params=params)
        elapsed = (time.perf_counter() - started) * 1000
        page = response.json() if response.status_code == 200 else {}
        full = len(page.get("items", [])) == params.get("limit", PAGE)
        if response.status_code != 200 or not (full or page["next_cursor"] is None):
            raise RuntimeError(f"bad answer {response.status_code}: {response.text[:200]}")
        return elapsed, page["next_cursor"]

    return one


async def measure(client: httpx.AsyncClient, name: str, count: int, params: dict[str, Any]) -> Measured:
    one = page_request({"limit": PAGE, **params})
    latencies, errors = [], 0
    for _ in range(count):
        try:
            latencies.append((await one(client))[0])
        except (RuntimeError, httpx.HTTPError):
            errors += 1
    return Measured(name, latencies, errors)


async def measure_deep(client: httpx.AsyncClient, walks: int, depth: int) -> Measured:
    """Pages 2..depth+1, each behind the previous page's cursor (keyset pagination, no OFFSET)."""
    first = page_request({"limit": PAGE})
    latencies, errors = [], 0
    for _ in range(walks):
        _, cursor = await first(client)
        for _ in range(depth):
            if cursor is None:
                break
            try:
                elapsed, cursor = await page_request({"limit": PAGE, "cursor": cursor})(client)
                latencies.append(elapsed)
            except (RuntimeError, httpx.HTTPError):
                errors += 1
                break
    return Measured(f"cursor pages 2 to {depth + 1}", latencies, errors)


async def measure_concurrent(client: httpx.AsyncClient, clients: int, count: int) -> Measured:
    results = await asyncio.gather(
        *(measure(client, "", count // clients, {}) for _ in range(clients))
    )  # fmt: skip
    return Measured(
        f"first page, {clients} clients at once",
        [ms for r in results for ms in r.latencies_ms],
        sum(r.errors for r in results),
    )


async def run(base_url: str, token: str, requests: int) -> list[Measured]:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10, limits=limits) as client:
        await measure(client, "warm-up", 300, {})
        return [
            await measure(client, f"first page (limit {PAGE})", requests, {}),
            await measure_deep(client, max(1, requests // 20), 20),
            await measure(client, "status=open", requests // 2, {"status": "open"}),
            await measure(client, "status=booked", requests // 2, {"status": "booked"}),
            await measure(client, "unread=true", requests // 2, {"unread": "true"}),
            await measure_concurrent(client, 4, requests),
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=10_000)
    parser.add_argument("--messages-per-thread", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    database_url = fresh_database()
    with FakeClerk() as clerk:
        env = {"DATABASE_URL": database_url, "CLERK_JWKS_URL": clerk.jwks_url, "CLERK_JWT_ISSUER": clerk.issuer}
        run_nmc(
            "tenants", "create", "--name", "Bench Plumbing", "--number", TENANT_NUMBER,
            "--forward-to", "+15553339999", "--timezone", "Etc/GMT", "--clerk-org", ORG, env=env,
        )  # fmt: skip
        for n in range(NOISE_TENANTS):
            run_nmc(
                "tenants", "create", "--name", f"Noise {n}", "--number", f"+1555334{n:04d}",
                "--forward-to", "+15553349999", "--clerk-org", f"org_noise_{n}", env=env,
            )  # fmt: skip
        started = time.perf_counter()
        counts = asyncio.run(seed(database_url, args.threads, args.messages_per_thread))
        seeded_in = time.perf_counter() - started
        stack = BenchStack(env)
        try:
            results = asyncio.run(run(stack.base_url, clerk.mint(org_id=ORG, exp_in=3600), args.requests))
        finally:
            stack.stop()
    print(
        f"\ninbox list: the tenant has {counts['threads']:,} threads and {counts['messages']:,} messages "
        f"({counts['all_threads']:,} threads and {counts['all_messages']:,} messages in the database; "
        f"seeded in {seeded_in:.1f} s). Client latency over loopback HTTP, Clerk token verified per request.\n"
    )
    print(table([r.row() for r in results], list(results[0].row())))


if __name__ == "__main__":
    main()

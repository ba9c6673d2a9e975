"""What billing adds to the first SMS's two statements, measured in Postgres (`just bench billing-statements`).

The planning query (`first_sms._CONTEXT`) with and without billing's `ENTITLED_SQL` column, and the
acceptance statement (`first_sms._ACCEPTED`) with and without `usage_cte`, executed alternately on one
connection (A, B, B, A, ...) so a busy machine slows both alike; each execution in a transaction that
is rolled back, so every insert is real. Prints each variant's median, P90 and mean in milliseconds
(client round trip on loopback included).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from nmc.billing import ENTITLED_SQL
from tests.bench import common

TENANT = "INSERT INTO tenants (id, name, timezone, status, business_hours, created_at, updated_at) VALUES ($1, 'Bench', 'Etc/GMT', 'active', '{}'::jsonb, now(), now())"  # noqa: E501
ACCOUNT = "INSERT INTO billing_accounts (tenant_id, subscription_status, texting_enabled, entitlement_reason) VALUES ($1, 'active', true, 'active')"  # noqa: E501
THREAD = "INSERT INTO conv_threads (id, tenant_id, caller, tenant_number, status) VALUES ($1, $2, '+15550001', '+15550002', 'open')"  # noqa: E501
MESSAGE = "INSERT INTO conv_messages (id, tenant_id, thread_id, direction, kind, to_number, from_number, body, status) VALUES ($1, $2, $3, 'outbound', 'first_sms', '+15550001', '+15550002', 'hi', 'sending')"  # noqa: E501


def variants() -> dict[str, str]:
    from nmc.conversations import first_sms

    context_b = first_sms._CONTEXT
    entitled = f"           {ENTITLED_SQL.format(tenant='t.id')} AS entitled,\n"
    accepted_b = first_sms._ACCEPTED
    start = accepted_b.index("usage AS (")
    end = accepted_b.index("),", start) + 2
    return {
        "planning query, without billing": context_b.replace(entitled, ""),
        "planning query, with ENTITLED_SQL": context_b,
        "acceptance, without billing": accepted_b[:start] + accepted_b[end:].lstrip(),
        "acceptance, with usage_cte": accepted_b,
    }


async def measure(database_url: str, rounds: int) -> dict[str, list[float]]:
    connection = await asyncpg.connect(database_url)
    tenant, thread, message, call = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await connection.execute(TENANT, tenant)
    await connection.execute(ACCOUNT, tenant)
    await connection.execute(THREAD, thread, tenant)
    await connection.execute(MESSAGE, message, tenant, thread)

    def context_args() -> tuple[Any, ...]:
        return (tenant, "+15550001", call, uuid.uuid4(), datetime.now(UTC))

    def accepted_args() -> tuple[Any, ...]:
        return (message, "accepted", "SM" + uuid.uuid4().hex, 8.5, uuid.uuid4(), tenant, datetime.now(UTC))

    args: dict[str, Callable[[], tuple[Any, ...]]] = {}
    sql = variants()
    for name in sql:
        if name.startswith("planning"):
            args[name] = context_args
        elif "usage" in name:
            args[name] = lambda: (*accepted_args(), 1)
        else:
            args[name] = accepted_args
    prepared = {name: await connection.prepare(text) for name, text in sql.items()}
    times: dict[str, list[float]] = {name: [] for name in sql}
    try:
        for index in range(rounds):
            for name in list(sql) if index % 2 == 0 else list(reversed(sql)):
                values = args[name]()
                transaction = connection.transaction()
                await transaction.start()
                started = time.perf_counter()
                await prepared[name].fetch(*values)
                times[name].append((time.perf_counter() - started) * 1000)
                await transaction.rollback()
    finally:
        await connection.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    common.BENCH_DATABASE = "nmc_bench_billing"
    times = asyncio.run(measure(common.fresh_database(), args.rounds))
    rows = []
    for name, values in times.items():
        values.sort()
        rows.append(
            {
                "statement": name,
                "executions": len(values),
                "median ms": f"{statistics.median(values):.3f}",
                "P90 ms": f"{values[int(len(values) * 0.9)]:.3f}",
                "mean ms": f"{statistics.fmean(values):.3f}",
            }
        )
    print(common.table(rows, list(rows[0])))


if __name__ == "__main__":
    main()

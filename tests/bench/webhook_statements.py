"""The missed call's webhook writes, as a transaction and as one statement (`just bench webhook-statements`).

What the dial outcome's webhook does after parsing, through our own functions on one connection: the
owner lookup, then either a transaction (BEGIN, the ledger row, the call upsert, `call.missed`'s
outbox row and job, COMMIT: `apply`, as `just replay-webhook` and the webhook before ADR 0020's last
lever ran it) or one autocommitted statement of their CTEs (`apply_in`, as the webhook runs it now).
Blocks of each alternate (A, B, B, A, ...) so a machine that speeds up or slows down moves both alike;
every write is real and committed. Prints each variant's latency per webhook (P50, P95: client round
trips on loopback included) and CPU per webhook: the Postgres backend's (from /proc) and this process's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from nmc.db import CteStatement, _json_codecs
from nmc.identity import NumberOwner, owner_of
from nmc.settings import get_settings
from nmc.telephony.service import CallOutcome, apply_outcome, outcome_in
from nmc.telephony.simulate import new_call_sid
from nmc.webhooks.ledger import FIRST_DELIVERY, Answer, Delivery, first_delivery_in, record_first_delivery, was_first
from tests.bench import common
from tests.conftest import run_nmc

TENANT_NUMBER = "+15552220000"
ANSWER = Answer(200, "<Response><Hangup/></Response>", "application/xml")


def _delivery(owner: NumberOwner, call_sid: str) -> Delivery:
    key = f"voice.dial-status:{call_sid}"
    return Delivery("twilio", "voice.dial-status", key, {"CallSid": call_sid}, None, owner.tenant_id)


class Webhooks:
    """Each call its own CallSid and caller: every webhook is a first delivery that publishes."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.calls = 0

    async def _routed(self) -> tuple[NumberOwner, CallOutcome]:
        self.calls += 1
        owner = await owner_of(self.connection, TENANT_NUMBER)
        assert owner is not None
        call_sid = new_call_sid()
        return owner, CallOutcome(call_sid, f"+1555{self.calls:07d}", TENANT_NUMBER, "no-answer", 0, True)

    async def in_a_transaction(self) -> None:
        owner, outcome = await self._routed()
        async with self.connection.transaction():
            assert await record_first_delivery(self.connection, _delivery(owner, outcome.call_sid), ANSWER)
            assert await apply_outcome(self.connection, owner, outcome, datetime.now(UTC), get_settings())

    async def in_one_statement(self) -> None:
        owner, outcome = await self._routed()
        statement = CteStatement()
        delivery = _delivery(owner, outcome.call_sid)
        first_delivery_in(statement, delivery, ANSWER)
        applied = outcome_in(statement, FIRST_DELIVERY, owner, outcome, datetime.now(UTC), get_settings())
        row = await statement.run(self.connection)
        assert was_first(row, delivery) and row["published"]
        applied(row)


async def measure(database_url: str, blocks: int, block: int) -> dict[str, dict[str, list[float]]]:
    connection = await asyncpg.connect(database_url)
    await _json_codecs(connection)  # as the hot pool's connections
    backend = await connection.fetchval("SELECT pg_backend_pid()")
    webhooks = Webhooks(connection)
    variants: dict[str, Callable[[], Awaitable[None]]] = {
        "transaction (BEGIN, 3 statements, COMMIT)": webhooks.in_a_transaction,
        "one statement (CteStatement)": webhooks.in_one_statement,
    }
    figures: dict[str, dict[str, list[float]]] = {name: {"ms": [], "pg": [], "client": []} for name in variants}
    try:
        for run in variants.values():  # warm: prepared statements, generic plans
            for _ in range(20):
                await run()
        for index in range(blocks):
            for name in list(variants) if index % 2 == 0 else list(reversed(variants)):
                pg, client = common._cpu_seconds(backend), time.process_time()
                for _ in range(block):
                    started = time.perf_counter()
                    await variants[name]()
                    figures[name]["ms"].append((time.perf_counter() - started) * 1000)
                figures[name]["pg"].append((common._cpu_seconds(backend) - pg) * 1000 / block)
                figures[name]["client"].append((time.process_time() - client) * 1000 / block)
    finally:
        await connection.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=10, help="blocks per variant, alternated")
    parser.add_argument("--block", type=int, default=300, help="webhooks per block")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    common.BENCH_DATABASE = "nmc_bench_webhook"
    url = common.fresh_database()
    run_nmc(
        "tenants", "create", "--name", "Bench Plumbing", "--number", TENANT_NUMBER,
        "--forward-to", "+15552229999", "--timezone", "Etc/GMT", env={"DATABASE_URL": url},
    )  # fmt: skip
    os.environ["DATABASE_URL"] = url
    figures = asyncio.run(measure(url, args.blocks, args.block))
    rows = [
        {
            "variant": name,
            "webhooks": len(values["ms"]),
            "P50 ms": f"{common.percentile(values['ms'], 50):.3f}",
            "P95 ms": f"{common.percentile(values['ms'], 95):.3f}",
            "Postgres CPU ms/webhook": f"{statistics.median(values['pg']):.3f}",
            "client CPU ms/webhook": f"{statistics.median(values['client']):.3f}",
        }
        for name, values in figures.items()
    ]
    print(common.table(rows, list(rows[0])))
    print(f"(CPU: medians over {args.blocks} blocks of {args.block} per variant)")


if __name__ == "__main__":
    main()

"""`just bench first-sms [--rate R --seconds S]`: missed call → first SMS under load.

Starts the fake Twilio API, the web and the worker as real processes, drives missed calls with
signed dial-status webhooks at a fixed (open-loop) rate, and measures from the moment each webhook
is sent to the moment the fake Twilio receives its Messages request. Every call has its own caller
number, so lost and duplicate texts are counted exactly. Without --rate it runs the issue's three
scenarios: 50/s for 60 s, 200/s for 30 s, and 50/s with the NOTIFY wake-up off (polling fallback).

`--pipeline minimal` drives the minimal reference pipeline (tests/bench/minimal: the same guarantees
and libraries, nothing else) with the same load and meters; `--pipeline both` runs each scenario on
ours and then on the minimal one, in one window. `--count-statements` adds statements and commits per
call, per process (counted inside the processes) and Postgres's own commits and rows written.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.bench.common import (
    COMMITS,
    PGQUEUER_COMMITS,
    BenchStack,
    CpuMeter,
    StatementCounter,
    database_stats,
    fresh_database,
    is_pgqueuer,
    summary,
    table,
    vacuum_when_autovacuum_is_off,
)
from tests.bench.minimal.stack import MinimalStack, fresh_minimal_database
from tests.conftest import MESSAGING_SERVICE_SID, TWILIO_SID, TWILIO_TOKEN, run_nmc
from tests.fakes.twilio_api import FakeTwilio

TENANT_NUMBER = "+15552220000"
PATH = "/webhooks/twilio/voice/dial-status"


@dataclass
class Scenario:
    name: str
    rate: float
    seconds: float
    listen: bool = True


@dataclass
class Result:
    scenario: Scenario
    latencies_ms: list[float]
    sent: int
    achieved_rate: float
    lost: int
    duplicates: int
    webhook_errors: int
    timeline: list[tuple[float, float]]  # (send time, Unix seconds; latency ms), by send time
    cpu_seconds: dict[str, float]  # web, worker, postgres over the measured window
    pipeline: str = "ours"
    statements: dict[str, Counter[str]] = field(default_factory=dict)  # by role, over the window
    postgres: dict[str, float] = field(default_factory=dict)  # pg_stat_* deltas (see database_stats)

    def cpu_ms_per_call(self, part: str | None = None) -> float:
        spent = self.cpu_seconds[part] if part else sum(self.cpu_seconds.values())
        return spent * 1000 / self.sent if self.sent else float("nan")

    def row(self) -> dict[str, object]:
        stats = summary(self.latencies_ms)
        return {
            "pipeline": self.pipeline,
            "scenario": self.scenario.name,
            "target rate/s": f"{self.scenario.rate:g}",
            "achieved rate/s": self.achieved_rate,
            "calls": self.sent,
            "P50 ms": stats["p50"],
            "P95 ms": stats["p95"],
            "P99 ms": stats["p99"],
            "max ms": stats["max"],
            "lost": self.lost,
            "duplicates": self.duplicates,
            "webhook errors": self.webhook_errors,
            "CPU ms/call (web / worker / postgres)": (
                f"{self.cpu_ms_per_call():.1f} ({self.cpu_ms_per_call('web'):.1f} / "
                f"{self.cpu_ms_per_call('worker'):.1f} / {self.cpu_ms_per_call('postgres'):.1f})"
            ),
        }

    def per_call(self, count: float) -> float:
        return count / self.sent if self.sent else float("nan")

    def work_row(self) -> dict[str, object]:
        """Statements and commits per call, by process, and what Postgres saw (with --count-statements)."""
        row: dict[str, object] = {"pipeline": self.pipeline, "scenario": self.scenario.name}
        for role in ("web", "worker"):
            counts = self.statements.get(role, Counter())
            queue = sum(n for statement, n in counts.items() if is_pgqueuer(statement))
            own = counts.total() - queue - counts[COMMITS] - counts[PGQUEUER_COMMITS]
            row[f"{role} statements/call (+ PgQueuer's)"] = f"{self.per_call(own):.2f} + {self.per_call(queue):.2f}"
            row[f"{role} commits/call (+ PgQueuer's)"] = (
                f"{self.per_call(counts[COMMITS]):.2f} + {self.per_call(counts[PGQUEUER_COMMITS]):.2f}"
            )
        if self.postgres:
            written = sum(self.postgres[k] for k in ("tup_inserted", "tup_updated", "tup_deleted"))
            row["Postgres commits/call"] = f"{self.per_call(self.postgres['xact_commit']):.2f}"
            row["rows written/call"] = f"{self.per_call(written):.2f}"
        return row

    def statement_lines(self) -> list[str]:
        lines = [f"\n{self.pipeline}, {self.scenario.name}: statements per call"]
        for role, counts in sorted(self.statements.items()):
            for query, count in counts.most_common():
                if self.per_call(count) >= 0.005:
                    lines.append(f"  {role:6} {self.per_call(count):5.2f}  {query[:150]}")
        tables = [(k, v) for k, v in self.postgres.items() if "." in k and self.per_call(v) >= 0.005]
        for name, count in sorted(tables, key=lambda item: -item[1]):
            lines.append(f"  rows   {self.per_call(count):5.2f}  {name}")
        return lines


def caller_number(run: int, index: int) -> str:
    return f"+1{run + 2:03d}{index:07d}"


async def drive(stack: BenchStack, scenario: Scenario, run: int) -> tuple[dict[str, float], int, float, int]:
    """Send one signed dial-status webhook per call at the scenario's rate; return send times.

    Bodies and signatures are prepared before the clock starts and sent with aiohttp, so the load
    generator (which shares the two cores with the system under test) stays cheap.
    """
    url = f"{stack.base_url}{PATH}"
    total = int(scenario.rate * scenario.seconds)
    prepared = []
    for index in range(total):
        caller = caller_number(run, index)
        params = dial_outcome_params(new_call_sid(), caller, TENANT_NUMBER)
        headers = {**signed_headers(url, params, TWILIO_TOKEN), "Content-Type": "application/x-www-form-urlencoded"}
        prepared.append((caller, urlencode(params).encode(), headers))
    sent_at: dict[str, float] = {}
    errors = 0
    # The load generator's own collection pauses would be measured as the system's latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    connector = aiohttp.TCPConnector(limit=400)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as client:

        async def one(caller: str, body: bytes, headers: dict[str, str]) -> None:
            nonlocal errors
            sent_at[caller] = time.time()
            try:
                async with client.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

        started = time.perf_counter()
        tasks = []
        for index, (caller, body, headers) in enumerate(prepared):
            delay = started + index / scenario.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(caller, body, headers)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    gc.enable()
    gc.unfreeze()
    return sent_at, total, total / elapsed, errors


def collect(
    fake: FakeTwilio, sent_at: dict[str, float], wait_seconds: float
) -> tuple[list[float], int, int, list[tuple[float, float]]]:
    deadline = time.monotonic() + wait_seconds
    created: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        created = [m for m in fake.messages() if m["sid"] and m["form"]["To"] in sent_at]
        if len({m["form"]["To"] for m in created}) >= len(sent_at):
            break
        time.sleep(0.25)
    per_caller = Counter(m["form"]["To"] for m in created)
    first_seen: dict[str, float] = {}
    for message in created:
        to = message["form"]["To"]
        first_seen[to] = min(first_seen.get(to, message["received_at"]), message["received_at"])
    latencies = [(first_seen[c] - sent_at[c]) * 1000 for c in first_seen]
    lost = len(sent_at) - len(per_caller)
    duplicates = sum(n - 1 for n in per_caller.values())
    timeline = sorted((sent_at[c], (first_seen[c] - sent_at[c]) * 1000) for c in first_seen)
    return latencies, lost, duplicates, timeline


# Backends publish their pg_stat counters when idle within about 10 s (PostgreSQL 15).
PG_STATS_SETTLE_SECONDS = 11


def run_scenario(
    stack: BenchStack | MinimalStack,
    fake: FakeTwilio,
    scenario: Scenario,
    run: int,
    pipeline: str = "ours",
    counter: StatementCounter | None = None,
) -> Result:
    if scenario.listen != (stack.worker_listen):
        stack.restart_worker(WORKER_LISTEN=str(scenario.listen).lower())
        stack.worker_listen = scenario.listen
    database_url = stack.env["DATABASE_URL"]
    fake.reset()
    warmup = Scenario("warmup", scenario.rate, 2, scenario.listen)
    asyncio.run(drive(stack, warmup, run + 100))
    asyncio.run(vacuum_when_autovacuum_is_off(database_url))
    time.sleep(PG_STATS_SETTLE_SECONDS if counter else 2)
    fake.reset()
    if counter:
        postgres_before = asyncio.run(database_stats(database_url))
        statements_before = counter.snapshot()
    meter = CpuMeter(stack, database_url)
    meter.start()
    sent_at, total, achieved, errors = asyncio.run(drive(stack, scenario, run))
    latencies, lost, duplicates, timeline = collect(fake, sent_at, wait_seconds=30)
    cpu = meter.stop()
    result = Result(scenario, latencies, total, achieved, lost, duplicates, errors, timeline, cpu, pipeline)
    if counter:
        time.sleep(1)  # the processes write their counts every half second
        result.statements = StatementCounter.spent(statements_before, counter.snapshot())
        time.sleep(PG_STATS_SETTLE_SECONDS)
        after = asyncio.run(database_stats(database_url))
        result.postgres = {key: value - postgres_before.get(key, 0.0) for key, value in after.items()}
    return result


def run_together(
    stacks: dict[str, BenchStack | MinimalStack], fake: FakeTwilio, scenario: Scenario, run: int
) -> list[Result]:
    """`--together`: every pipeline driven at the scenario's rate at the same time, each metered over the
    same window — the VM's speed, which drifts by tens of percent within minutes here, is then the
    same for both, and only the ratio of their CPU per call is meant to be read (the latencies are
    each under the other's load)."""
    numbers = {pipeline: run + 50 * offset for offset, pipeline in enumerate(stacks)}
    urls = {pipeline: stack.env["DATABASE_URL"] for pipeline, stack in stacks.items()}

    async def drive_all(current: Scenario, offset: int) -> list[tuple[dict[str, float], int, float, int]]:
        return await asyncio.gather(
            *(drive(stack, current, numbers[pipeline] + offset) for pipeline, stack in stacks.items())
        )

    fake.reset()
    asyncio.run(drive_all(Scenario("warmup", scenario.rate, 2, scenario.listen), 100))
    for url in urls.values():
        asyncio.run(vacuum_when_autovacuum_is_off(url))
    time.sleep(2)
    fake.reset()
    meters = {pipeline: CpuMeter(stack, urls[pipeline]) for pipeline, stack in stacks.items()}
    for meter in meters.values():
        meter.start()
    driven = dict(zip(stacks, asyncio.run(drive_all(scenario, 0)), strict=True))
    collected = {pipeline: collect(fake, driven[pipeline][0], wait_seconds=30) for pipeline in stacks}
    cpu = {pipeline: meter.stop() for pipeline, meter in meters.items()}
    results = []
    for pipeline in stacks:
        _, total, achieved, errors = driven[pipeline]
        latencies, lost, duplicates, timeline = collected[pipeline]
        results.append(
            Result(scenario, latencies, total, achieved, lost, duplicates, errors, timeline, cpu[pipeline], pipeline)
        )
    return results


async def _execute_file(database_url: str, path: Path) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(path.read_text())
    finally:
        await connection.close()


def twilio_env(fake: FakeTwilio) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
        "TWILIO_API_BASE_URL": fake.base_url,
    }


def setup_minimal(fake: FakeTwilio, counter: StatementCounter | None) -> MinimalStack:
    env = {"DATABASE_URL": fresh_minimal_database(), **twilio_env(fake), **(counter.env("web") if counter else {})}
    return MinimalStack(env, worker_env=counter.env("worker") if counter else None)


def setup(database_url: str, fake: FakeTwilio, counter: StatementCounter | None = None, workers: int = 1) -> BenchStack:
    env = {
        "DATABASE_URL": database_url,
        "TWILIO_ACCOUNT_SID": TWILIO_SID,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "TWILIO_MESSAGING_SERVICE_SID": MESSAGING_SERVICE_SID,
        "TWILIO_API_BASE_URL": fake.base_url,
    }
    run_nmc(
        "tenants", "create", "--name", "Bench Plumbing", "--number", TENANT_NUMBER,
        "--forward-to", "+15552229999", "--timezone", "Etc/GMT", env=env,
    )  # fmt: skip
    # Quiet hours off and no cooldown: the bench measures the path, not the guards' verdicts.
    # (A write: not a `just sql` query, those run read-only.)
    asyncio.run(_execute_file(database_url, Path(__file__).with_name("no_quiet_hours.sql")))
    # `--workers N`: the worker as `WORKER_PROCESSES=N just worker` starts it (one supervisor, N processes;
    # the CPU meter follows the supervisor's process tree).
    worker_env = {"WORKER_PROCESSES": str(workers), **(counter.env("worker") if counter else {})}
    stack = BenchStack({**env, **(counter.env("web") if counter else {})}, worker_env)
    stack.worker_listen = True
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, help="missed calls per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--polling", action="store_true", help="with the NOTIFY wake-up off")
    parser.add_argument(
        "--pipeline", choices=("ours", "minimal", "both"), default="ours", help="minimal: the reference pipeline"
    )
    parser.add_argument(
        "--count-statements", action="store_true", help="statements and commits per call (adds ~25 s per scenario)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (WORKER_PROCESSES)")
    parser.add_argument(
        "--together", action="store_true",
        help="with --pipeline both: drive both pipelines at once (same VM speed for both; read the CPU ratio)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, choices=range(1, 6), metavar="N",
        help="run each scenario N times, alternating the pipelines on the same processes (1-5)",
    )  # fmt: skip
    parser.add_argument(
        "--timeline", metavar="CSV", help="write each call's send time (Unix s) and latency (ms), to find stalls"
    )
    args = parser.parse_args()
    if args.rate:
        workers = f", {args.workers} worker processes" if args.workers > 1 else ""
        scenarios = [Scenario(f"{args.rate:g}/s{workers}", args.rate, args.seconds, listen=not args.polling)]
    else:
        scenarios = [
            Scenario("50/s for 60 s", 50, 60),
            Scenario("200/s for 30 s", 200, 30),
            Scenario("50/s for 20 s, NOTIFY off (polling)", 50, 20, listen=False),
        ]
    pipelines = ["ours", "minimal"] if args.pipeline == "both" else [args.pipeline]
    counters = {pipeline: StatementCounter() if args.count_statements else None for pipeline in pipelines}
    results = []
    with FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN, collect_garbage=False) as fake:
        stacks: dict[str, BenchStack | MinimalStack] = {}
        try:
            if "ours" in pipelines:
                stacks["ours"] = setup(fresh_database(), fake, counters["ours"], workers=args.workers)
            if "minimal" in pipelines:
                stacks["minimal"] = setup_minimal(fake, counters["minimal"])
            for repeat in range(args.repeat):
                for run, scenario in enumerate(scenarios):
                    if args.together and len(stacks) > 1 and scenario.listen and not args.count_statements:
                        results.extend(run_together(stacks, fake, scenario, 200 * repeat + run))
                        continue
                    for offset, (pipeline, stack) in enumerate(stacks.items()):
                        if pipeline == "minimal" and not scenario.listen:
                            continue  # the minimal worker always listens
                        counter = counters[pipeline]
                        # callers never repeat across runs (+100: the run's warm-up)
                        number = 200 * repeat + 50 * offset + run
                        results.append(run_scenario(stack, fake, scenario, number, pipeline, counter))
        finally:
            for stack in stacks.values():
                stack.stop()
    print("\nfirst SMS: webhook sent → Twilio Messages request received (fake Twilio on loopback)\n")
    print(table([r.row() for r in results], list(results[0].row())))
    if args.pipeline == "both":
        print(cpu_ratios(results))
    if args.count_statements:
        print("\nwork per call in the same windows (statements exclude commits; Postgres's include ~11 s idle)\n")
        print(table([r.work_row() for r in results], list(results[0].work_row())))
        for result in results:
            print("\n".join(result.statement_lines()))
    if args.timeline:
        write_timeline(args.timeline, results)


def cpu_ratios(results: list[Result]) -> str:
    """Ours over the minimal pipeline's CPU per call, each run against the minimal run right after it
    (the VM's speed drifts: only neighbours compare), and the median of those ratios per scenario."""
    lines = [
        "\nCPU per call, ours / minimal (each ours run against the minimal run after it, or beside it with --together):"
    ]
    by_scenario: dict[str, list[float]] = {}
    for ours, minimal in itertools.pairwise(results):
        if (ours.pipeline, minimal.pipeline) == ("ours", "minimal") and ours.scenario == minimal.scenario:
            by_scenario.setdefault(ours.scenario.name, []).append(ours.cpu_ms_per_call() / minimal.cpu_ms_per_call())
    for name, ratios in by_scenario.items():
        listed = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        lines.append(f"  {name}: {listed} — median {statistics.median(ratios):.2f}x")
    return "\n".join(lines)


def write_timeline(path: str, results: list[Result]) -> None:
    with open(path, "w") as out:
        out.write("scenario,sent_at,latency_ms\n")
        for result in results:
            for sent, latency in result.timeline:
                out.write(f"{result.scenario.name},{sent:.4f},{latency:.2f}\n")
    print(f"\ntimeline: {path}")


if __name__ == "__main__":
    main()

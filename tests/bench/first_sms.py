"""`just bench first-sms [--rate R --seconds S]`: missed call → first SMS under load.

Starts the fake Twilio API, the web and the worker as real processes, drives missed calls with
signed dial-status webhooks at a fixed (open-loop) rate, and measures from the moment each webhook
is sent to the moment the fake Twilio receives its Messages request. Every call has its own caller
number, so lost and duplicate texts are counted exactly. Without --rate it runs the issue's three
scenarios: 50/s for 60 s, 200/s for 30 s, and 50/s with the NOTIFY wake-up off (polling fallback).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg

from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.bench.common import BenchStack, CpuMeter, fresh_database, summary, table
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

    def cpu_ms_per_call(self, part: str | None = None) -> float:
        spent = self.cpu_seconds[part] if part else sum(self.cpu_seconds.values())
        return spent * 1000 / self.sent if self.sent else float("nan")

    def row(self) -> dict[str, object]:
        stats = summary(self.latencies_ms)
        return {
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


def run_scenario(stack: BenchStack, fake: FakeTwilio, scenario: Scenario, run: int) -> Result:
    if scenario.listen != (stack.worker_listen):
        stack.restart_worker(WORKER_LISTEN=str(scenario.listen).lower())
        stack.worker_listen = scenario.listen
    fake.reset()
    warmup = Scenario("warmup", scenario.rate, 2, scenario.listen)
    asyncio.run(drive(stack, warmup, run + 100))
    time.sleep(2)
    fake.reset()
    meter = CpuMeter(stack, stack.env["DATABASE_URL"])
    meter.start()
    sent_at, total, achieved, errors = asyncio.run(drive(stack, scenario, run))
    latencies, lost, duplicates, timeline = collect(fake, sent_at, wait_seconds=30)
    cpu = meter.stop()
    return Result(scenario, latencies, total, achieved, lost, duplicates, errors, timeline, cpu)


async def _execute_file(database_url: str, path: Path) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(path.read_text())
    finally:
        await connection.close()


def setup(database_url: str, fake: FakeTwilio) -> BenchStack:
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
    stack = BenchStack(env)
    stack.worker_listen = True
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, help="missed calls per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--polling", action="store_true", help="with the NOTIFY wake-up off")
    parser.add_argument(
        "--timeline", metavar="CSV", help="write each call's send time (Unix s) and latency (ms), to find stalls"
    )
    args = parser.parse_args()
    if args.rate:
        scenarios = [Scenario(f"{args.rate:g}/s", args.rate, args.seconds, listen=not args.polling)]
    else:
        scenarios = [
            Scenario("50/s for 60 s", 50, 60),
            Scenario("200/s for 30 s", 200, 30),
            Scenario("50/s for 20 s, NOTIFY off (polling)", 50, 20, listen=False),
        ]
    database_url = fresh_database()
    with FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN, collect_garbage=False) as fake:
        stack = setup(database_url, fake)
        try:
            results = [run_scenario(stack, fake, scenario, run) for run, scenario in enumerate(scenarios)]
        finally:
            stack.stop()
    print("\nfirst SMS: webhook sent → Twilio Messages request received (fake Twilio on loopback)\n")
    print(table([r.row() for r in results], list(results[0].row())))
    if args.timeline:
        write_timeline(args.timeline, results)


def write_timeline(path: str, results: list[Result]) -> None:
    with open(path, "w") as out:
        out.write("scenario,sent_at,latency_ms\n")
        for result in results:
            for sent, latency in result.timeline:
                out.write(f"{result.scenario.name},{sent:.4f},{latency:.2f}\n")
    print(f"\ntimeline: {path}")


if __name__ == "__main__":
    main()

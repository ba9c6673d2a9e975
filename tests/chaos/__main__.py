"""`just chaos [--short] [--scenario NAME ...]`: the fault suite against the real processes.

Starts a private PostgreSQL cluster (initdb into a temporary directory, on a free port), migrates it,
starts the fake Twilio API, `nmc web`, two `nmc worker` and `nmc jobs`, runs each scenario, and
prints one table: texts expected, sent exactly once, lost, duplicated, webhooks not accepted, and the
recovery in seconds (fault's end → the last text it held up went out). Exits 1 when any scenario lost
or duplicated a text, took more than 10 s to recover, or failed one of its own checks.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, datetime

from tests.bench.common import table
from tests.chaos.accounting import Row
from tests.chaos.environment import ChaosEnv
from tests.chaos.scenarios import FULL, SCENARIOS, SHORT, run_scenario


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
        help=f"run only this one (repeatable): {', '.join(SCENARIOS)}",
    )  # fmt: skip
    parser.add_argument("--short", action="store_true", help="fewer calls, shorter windows, 1 kill, backlog 100")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    config = SHORT if args.short else FULL
    names = args.scenario or list(SCENARIOS)
    started = time.monotonic()
    print(f"chaos: starting a private PostgreSQL, fake Twilio, web, {args.workers} workers, jobs", flush=True)
    # A SIGTERM (a CI timeout, `timeout`) unwinds like Ctrl-C, so the processes and the cluster are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = ChaosEnv(workers=args.workers)
    rows: list[Row] = []
    try:
        print(f"chaos: ready in {time.monotonic() - started:.0f} s; logs in {env.log_dir}", flush=True)
        for name in names:
            began = time.monotonic()
            row = run_scenario(env, name, config)
            rows.append(row)
            print(f"chaos: {name}: {row.verdict()} ({time.monotonic() - began:.0f} s)", flush=True)
    finally:
        env.stop()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\nfault suite{' (--short)' if args.short else ''}, {stamp}, {time.monotonic() - started:.0f} s\n")
    print(table([row.cells() for row in rows], list(rows[0].cells())) if rows else "(no scenario ran)")
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the bench database's busy backends wait for (`just bench wal-waits [--seconds S]`).

Run it beside `just bench first-sms` (start the bench first; this samples whatever runs): every 20 ms
it reads `pg_stat_activity` for the backends of the bench databases that are not idle, and prints how
the samples split by wait event — `None` is running on a CPU; `IO:WALSync` and `LWLock:WALWrite` are
commits waiting for the WAL to reach the disk; `Lock:object` is a commit waiting for PostgreSQL's
NOTIFY lock (held through the commit's flush). It reads one view and costs the machine little.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

import asyncpg

from tests.bench import common

_BUSY = """
    SELECT coalesce(wait_event_type, 'None') || ':' || coalesce(wait_event, 'running') AS waiting_for
    FROM pg_stat_activity
    WHERE datname LIKE $1 AND state <> 'idle' AND pid <> pg_backend_pid()
"""


async def sample(seconds: float, interval: float) -> Counter[str]:
    connection = await asyncpg.connect(f"{common.SERVER_URL}/postgres")
    samples: Counter[str] = Counter()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            samples.update(row["waiting_for"] for row in await connection.fetch(_BUSY, f"{common.BENCH_DATABASE}%"))
            await asyncio.sleep(interval)
    finally:
        await connection.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    samples = asyncio.run(sample(args.seconds, args.interval))
    total = sum(samples.values())
    rows = [
        {"waiting for": name, "samples": count, "share": f"{count * 100 / total:.1f} %"}
        for name, count in samples.most_common()
    ]
    print(common.table(rows, ["waiting for", "samples", "share"]) if rows else "no busy backend was seen")
    wal = samples["IO:WALSync"] + samples["LWLock:WALWrite"] + samples["IO:WALWrite"]
    if total:
        print(f"waiting for the WAL to reach the disk: {wal * 100 / total:.1f} % of {total} samples")


if __name__ == "__main__":
    main()

"""Statement counting for the benchmarks, loaded only by the processes a bench starts.

The bench puts this folder on PYTHONPATH with BENCH_COUNT_STATEMENTS=1, so Python imports it at start
(`sitecustomize`): product code is unchanged. Every statement asyncpg sends is counted by its SQL
text (plain and prepared, executemany as one; BEGIN and COMMIT included, as asyncpg sends them as
statements), and commits under `(commits)`: a COMMIT, or a statement run outside a transaction
(PgQueuer's own statements outside a transaction under a key of their own).
The counts are written every half second to BENCH_STATEMENTS_DIR/<pid>.json with the process's
BENCH_ROLE, for the bench to diff over its measured window. A statement served from
asyncpg's statement cache is one round trip; a first Parse adds one (not counted: the warm-up pays it).
"""

from __future__ import annotations

import os

if os.environ.get("BENCH_COUNT_STATEMENTS") == "1":
    import atexit
    import json
    import threading
    from collections import Counter
    from pathlib import Path

    from asyncpg import connection as _connection
    from asyncpg import prepared_stmt as _prepared

    COMMITS = "(commits)"
    PGQUEUER_COMMITS = "(commits: PgQueuer's own)"  # its dequeue, probes and job log, outside a transaction
    _OPENERS = ("BEGIN", "ROLLBACK", "START TRANSACTION")
    _counts: Counter[str] = Counter()
    _out = Path(os.environ["BENCH_STATEMENTS_DIR"]) / f"{os.getpid()}.json"

    def _key(query: str) -> str:
        return " ".join(query.split())

    def _count(connection: _connection.Connection, query: str) -> None:
        """One statement; and one commit when it ends a transaction or runs outside one (autocommit)."""
        key = _key(query)
        _counts[key] += 1
        word = key.upper().rstrip(";")
        if word == "COMMIT" or (not connection.is_in_transaction() and not word.startswith(_OPENERS)):
            _counts[PGQUEUER_COMMITS if "pgqueuer" in key else COMMITS] += 1

    _execute = _connection.Connection.execute

    async def execute(self, query, *args, timeout=None):  # type: ignore[no-untyped-def]
        if not args:  # with arguments it goes through `_execute`, counted there
            _count(self, query)
        return await _execute(self, query, *args, timeout=timeout)

    _inner_execute = _connection.Connection._execute

    async def inner_execute(self, query, args, limit, timeout, **kwargs):  # type: ignore[no-untyped-def]
        _count(self, query)
        return await _inner_execute(self, query, args, limit, timeout, **kwargs)

    _executemany = _connection.Connection._executemany

    async def executemany(self, query, args, timeout, **kwargs):  # type: ignore[no-untyped-def]
        _count(self, query)
        return await _executemany(self, query, args, timeout, **kwargs)

    _prepared_execute = _prepared.PreparedStatement._PreparedStatement__do_execute  # type: ignore[attr-defined]

    async def prepared_execute(self, executor):  # type: ignore[no-untyped-def]
        _count(self._connection, self._query)
        return await _prepared_execute(self, executor)

    _connection.Connection.execute = execute  # type: ignore[method-assign]
    _connection.Connection._execute = inner_execute  # type: ignore[method-assign]
    _connection.Connection._executemany = executemany  # type: ignore[method-assign]
    _prepared.PreparedStatement._PreparedStatement__do_execute = prepared_execute  # type: ignore[attr-defined]

    def _dump() -> None:
        for _ in range(3):  # the event loop may add a key while we copy
            try:
                snapshot = dict(_counts)
                break
            except RuntimeError:
                continue
        else:
            return
        if not snapshot:
            return
        temporary = _out.with_suffix(".tmp")
        temporary.write_text(json.dumps({"role": os.environ.get("BENCH_ROLE", "other"), "statements": snapshot}))
        temporary.replace(_out)

    def _dump_every_half_second() -> None:
        stop = threading.Event()
        while not stop.wait(0.5):
            _dump()

    threading.Thread(target=_dump_every_half_second, name="bench-statement-counts", daemon=True).start()
    atexit.register(_dump)

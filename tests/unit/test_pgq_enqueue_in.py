"""`enqueue_in` is PgQueuer's own enqueue statement as parts of ours, bound as PgQueuer binds it."""

from __future__ import annotations

from typing import Any

from pgqueuer import Queries

from nmc.db import CteStatement, numbered_from
from nmc.queue.pgq import _ENQUEUE_RESULT, _QUEUE, enqueue_in, job_values


class Recorded:
    """A driver stand-in that records what PgQueuer would send (no database: this is PgQueuer's side)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.calls.append((query, args))
        return []


def test_the_parts_are_pgqueuers_statement_after_the_callers_own() -> None:
    statement = CteStatement()
    statement.with_cte("published", "SELECT $1 AS id", ["row"])
    enqueue_in(statement, "outbox.dispatch", b"\x01", "outbox:1")
    # PgQueuer's statement is `WITH` its CTEs, then the final SELECT `enqueue_in` leaves out.
    head, found, _ = _QUEUE.build_enqueue_query("skip").rpartition(_ENQUEUE_RESULT)
    assert found
    pgqueuers_ctes = numbered_from(head.strip().removeprefix("WITH "), 2)  # its `$1`-`$6` after our `$1`
    assert statement.sql == f"WITH published AS (SELECT $1 AS id),\n{pgqueuers_ctes}\nSELECT NULL"
    assert "$2::int[]" in statement.sql and "$7::jsonb[]" in statement.sql
    assert statement.values == ["row", *job_values("outbox.dispatch", b"\x01", "outbox:1")]


def test_a_condition_gates_the_input_rows() -> None:
    statement = CteStatement()
    enqueue_in(statement, "outbox.dispatch", b"\x01", "outbox:1", when="EXISTS (SELECT FROM published)")
    assert "headers, ord) WHERE EXISTS (SELECT FROM published)" in " ".join(statement.sql.split())


async def test_job_values_are_what_pgqueuers_enqueue_binds() -> None:
    driver = Recorded()
    queries = Queries(driver, qbq=_QUEUE)  # type: ignore[arg-type]
    await queries.enqueue("outbox.dispatch", b"\x01", dedupe_key="outbox:1", on_conflict="skip")
    [(query, bound)] = driver.calls
    assert query == _QUEUE.build_enqueue_query("skip")
    assert tuple(bound) == job_values("outbox.dispatch", b"\x01", "outbox:1")

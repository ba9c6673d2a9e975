"""`enqueue_after` is PgQueuer's own enqueue statement with a CTE in front, bound as PgQueuer binds it."""

from __future__ import annotations

from typing import Any

from pgqueuer import Queries

from nmc.queue.pgq import _QUEUE, enqueue_after, job_values


class Recorded:
    """A driver stand-in that records what PgQueuer would send (no database: this is PgQueuer's side)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.calls.append((query, args))
        return []


def test_the_statement_is_pgqueuers_with_the_cte_first() -> None:
    combined = enqueue_after("published AS (SELECT 1)")
    assert combined.strip().startswith("WITH published AS (SELECT 1), input AS MATERIALIZED (")
    assert combined.replace("published AS (SELECT 1), ", "") == _QUEUE.build_enqueue_query("skip")


async def test_job_values_are_what_pgqueuers_enqueue_binds() -> None:
    driver = Recorded()
    queries = Queries(driver, qbq=_QUEUE)  # type: ignore[arg-type]
    await queries.enqueue("outbox.dispatch", b"\x01", dedupe_key="outbox:1", on_conflict="skip")
    [(query, bound)] = driver.calls
    assert query == _QUEUE.build_enqueue_query("skip")
    assert tuple(bound) == job_values("outbox.dispatch", b"\x01", "outbox:1")

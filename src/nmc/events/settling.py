"""Settling a dispatched event inside its last handler's own final transaction.

The dispatcher marks an outbox row dispatched once every handler returned (a commit of its own). A
last handler whose final transaction is the end of its work may instead settle the row in that
transaction (`settle_on`, or `published_cte` in the statement it publishes with): its
commit completes the dispatch, its rollback leaves the row for a retry, and the dispatcher, seeing
the row settled, writes nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

MARK_DISPATCHED = "UPDATE outbox_events SET dispatched_at = now() WHERE id = $1"


@dataclass
class Settling:
    """The event the running (last) handler may settle in its own transaction."""

    event_id: UUID
    settled: bool = False


_settling: ContextVar[Settling | None] = ContextVar("outbox_settling", default=None)


async def run_handler(handler: Callable[[Any], Awaitable[None]], event: Any, settling: Settling | None) -> None:
    """Run `handler` for `event`; with `settling` it is the last one and may settle the event."""
    token = _settling.set(settling)
    try:
        await handler(event)
    finally:
        _settling.reset(token)


def settling_now() -> Settling | None:
    """The event a statement about to run may settle (None outside a last handler)."""
    return _settling.get()


async def settle_on(connection: asyncpg.Connection) -> None:
    """Mark the event being dispatched as dispatched in the caller's transaction.

    For a handler's final transaction, after which it does nothing that can fail. Does nothing
    outside a dispatch, or in a handler that other handlers follow."""
    settling = settling_now()
    if settling is not None:
        await connection.execute(MARK_DISPATCHED, settling.event_id)
        settling.settled = True

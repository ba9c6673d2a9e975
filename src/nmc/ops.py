"""What the CLI does against the database, outside any request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text

from nmc.conversations import PausedTexts, paused_texts, suppress_stale_paused
from nmc.db import MIGRATIONS_DIR, raw_connection, session_scope
from nmc.events import release_deferred
from nmc.messaging import PAUSED_REASON, SendingState, pause_sending, resume_sending, sending_state
from nmc.settings import get_settings

QUERIES_DIR = MIGRATIONS_DIR / "queries"


def named_queries() -> list[str]:
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


async def run_named_query(name: str) -> list[dict[str, Any]]:
    path = QUERIES_DIR / f"{name}.sql"
    if "/" in name or not path.is_file():
        raise FileNotFoundError(f"no query {name!r}; available: {', '.join(named_queries())}")
    async with session_scope() as session:
        # Ops queries only read: the transaction is READ ONLY, so none can write (issue #13).
        await session.execute(text("SET TRANSACTION READ ONLY"))
        result = await session.execute(text(path.read_text()))
        return [dict(row) for row in result.mappings()]


# ---------------------------------------------------------------- the kill switch (issue #13)
# One implementation for `just pause-sms` / `just resume-sms` (ops_cli.py) and the operators' REST API
# (ops_api.py): both call these.


@dataclass(frozen=True)
class SmsSendingStatus:
    state: SendingState  # the operator's pause (who, why, since when) and the sending circuit
    texts: PausedTexts  # texts waiting as paused, and how many a resume would suppress as stale
    max_age_minutes: int  # PAUSE_MAX_AGE_MINUTES
    paused_at_start: bool  # PAUSE_OUTBOUND_SMS as this process reads it


@dataclass(frozen=True)
class SmsResumed:
    suppressed: int  # texts older than PAUSE_MAX_AGE_MINUTES: suppressed (`paused_too_long`), counted
    released: int  # waiting events made due now (the other texts go at once)


class NotPaused(Exception):
    """A resume when no operator paused sending: nothing changes."""


@asynccontextmanager
async def _transaction() -> AsyncIterator[asyncpg.Connection]:
    # The session pool, not the worker's hot pool: the web serves these too (ops_api.py), rarely.
    async with session_scope() as session:
        yield await raw_connection(session)


async def sms_sending_status() -> SmsSendingStatus:
    settings = get_settings()
    async with _transaction() as connection:
        state = await sending_state(connection)
        texts = await paused_texts(connection, settings.PAUSE_MAX_AGE_MINUTES)
    return SmsSendingStatus(state, texts, settings.PAUSE_MAX_AGE_MINUTES, settings.PAUSE_OUTBOUND_SMS)


async def pause_sms(by: str, reason: str) -> datetime:
    """Every worker holds every text from its next decision on (no restart). Returns since when (an
    existing pause keeps its start, who and why)."""
    async with _transaction() as connection:
        return await pause_sending(connection, by, reason)


async def resume_sms() -> SmsResumed:
    """End the operator's pause: stale paused texts suppressed first, the others released now."""
    async with _transaction() as connection:
        suppressed = await suppress_stale_paused(connection, get_settings().PAUSE_MAX_AGE_MINUTES)
        if not await resume_sending(connection, suppressed):
            raise NotPaused  # rolls the suppression back: a resume without a pause changes nothing
    released = await release_deferred(PAUSED_REASON)  # the waiting texts go now, not at their next recheck
    return SmsResumed(suppressed=suppressed, released=released)

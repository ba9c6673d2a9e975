"""Texts waiting as `paused` when an operator resumes sending (issue #13): those that waited longer than
PAUSE_MAX_AGE_MINUTES are not blasted out late — they are suppressed (`paused_too_long`) and counted;
the operator sees how many before resuming (`just resume-sms`).

Age is counted from when the text was decided (`created_at`: for a first SMS, the missed call). A text
held that long is stale whatever held it (the operator's pause, PAUSE_OUTBOUND_SMS, the sending circuit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from nmc.messaging import MessageStatus, SuppressedReason

_COUNT = """
    SELECT count(*) AS waiting,
           count(*) FILTER (WHERE created_at < now() - make_interval(mins => $1)) AS stale,
           min(created_at) AS oldest
    FROM conv_messages WHERE status = 'paused'
"""
_SUPPRESS = f"""
    UPDATE conv_messages
    SET status = '{MessageStatus.SUPPRESSED}', suppressed_reason = '{SuppressedReason.PAUSED_TOO_LONG}',
        scheduled_for = NULL
    WHERE status = '{MessageStatus.PAUSED}' AND created_at < now() - make_interval(mins => $1)
    RETURNING id
"""


@dataclass(frozen=True)
class PausedTexts:
    waiting: int  # every text waiting as `paused`
    stale: int  # of which older than the limit: a resume suppresses them
    oldest: datetime | None


async def paused_texts(connection: asyncpg.Connection, max_age_minutes: int) -> PausedTexts:
    row = await connection.fetchrow(_COUNT, max_age_minutes)
    return PausedTexts(waiting=row["waiting"], stale=row["stale"], oldest=row["oldest"])


async def suppress_stale_paused(connection: asyncpg.Connection, max_age_minutes: int) -> int:
    """Suppress (`paused_too_long`) every paused text older than the limit; returns how many."""
    return len(await connection.fetch(_SUPPRESS, max_age_minutes))

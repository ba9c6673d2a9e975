"""The operator's pause (issue #13's kill switch at runtime): `just pause-sms` / `just resume-sms`.

One more reason to hold sending in `sms_sending_state`, beside the circuit: `paused_at` set means every
text waits as `paused` (the decision's `SendFacts.operator_paused`, read by the planning queries with
`PAUSE_SQL`, a scalar subquery in the statement they run anyway: no extra round trip). Each worker
reads it at every decision, so a pause takes effect at the next text, without a restart.
`PAUSE_OUTBOUND_SMS` still pauses a process from its start (its env), independently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

# Published for the senders' planning queries: true while an operator has paused sending.
PAUSE_SQL = "coalesce((SELECT s.paused_at IS NOT NULL FROM sms_sending_state s WHERE s.id = 1), false)"

_PAUSE = """
    INSERT INTO sms_sending_state AS s (id, paused_at, paused_by, pause_reason, updated_at)
    VALUES (1, now(), left($1, 100), left($2, 200), now())
    ON CONFLICT (id) DO UPDATE SET
        paused_at = coalesce(s.paused_at, now()), paused_by = EXCLUDED.paused_by,
        pause_reason = EXCLUDED.pause_reason, updated_at = now()
    RETURNING paused_at
"""
_RESUME = """
    UPDATE sms_sending_state
    SET paused_at = NULL, paused_by = NULL, pause_reason = NULL,
        suppressed_after_pause = suppressed_after_pause + $1, updated_at = now()
    WHERE id = 1 AND paused_at IS NOT NULL
    RETURNING 1
"""
_STATE = """
    SELECT paused_at, paused_by, pause_reason, suppressed_after_pause,
           circuit_opened_at, circuit_http_status, circuit_code, circuit_reason, circuit_probe_at, circuit_cause
    FROM sms_sending_state WHERE id = 1
"""


@dataclass(frozen=True)
class SendingState:
    paused_at: datetime | None = None
    paused_by: str | None = None
    pause_reason: str | None = None
    suppressed_after_pause: int = 0
    circuit_opened_at: datetime | None = None
    circuit_http_status: int | None = None
    circuit_code: int | None = None
    circuit_reason: str | None = None
    circuit_probe_at: datetime | None = None
    circuit_cause: str | None = None  # account | unavailable (`CircuitCause`)


async def pause_sending(connection: asyncpg.Connection, by: str, reason: str) -> datetime:
    """Pause every text (kept as it was if already paused: `paused_at` is when it started)."""
    paused_at: datetime = await connection.fetchval(_PAUSE, by, reason)
    return paused_at


async def resume_sending(connection: asyncpg.Connection, suppressed: int = 0) -> bool:
    """End the pause, adding the texts the resume suppressed to the counter. False when not paused."""
    return await connection.fetchval(_RESUME, suppressed) is not None


async def sending_state(connection: asyncpg.Connection) -> SendingState:
    row = await connection.fetchrow(_STATE)
    return SendingState(**dict(row)) if row is not None else SendingState()

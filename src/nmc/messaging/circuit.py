"""The sending circuit: when Twilio refuses our credentials or account, sending pauses for everyone.

A 401/403 or an account error code (`ACCOUNT_REFUSALS`) is not the text's fault, and every other text
would get the same answer. So the refusal opens the circuit in `sms_sending_state` (one row, shared by
every worker process), the text waits as `paused`, and its event is deferred until the next probe.

While the circuit is open the decision (`decide`) answers `Wait` until `circuit_probe_at`, and
`Probe` once it is due: the sender then claims the probe with one atomic UPDATE (`claim_probe`), so one
sender at a time tries Twilio; the others wait. A probe Twilio answers (accepted, or refused for a
reason about the recipient) closes the circuit (`close_circuit`) and releases every deferred text, so
sending resumes by itself. A probe refused again pushes the next probe `PROBE_INTERVAL` on.

The planning queries read the state with `CIRCUIT_SQL` (a scalar subquery: no extra round trip on
the first-SMS path); a statement more is spent only on opening, on a probe and on closing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import structlog

from nmc.messaging.decision import CIRCUIT_REASON, Send, Wait
from nmc.messaging.sms import SmsRejected
from nmc.messaging.vocabulary import MessageStatus

log = structlog.get_logger(module="messaging")

PROBE_INTERVAL = timedelta(seconds=5)  # one text every 5 s while refused; back within ~5 s once accepted
# A sender that lost the race for a due probe waits at least this long (the winner's outcome).
LOST_PROBE_WAIT = timedelta(seconds=1)

# Published for the senders' planning queries: when the next probe may go while the circuit is open,
# NULL while it is closed (or the row is missing).
CIRCUIT_SQL = "(SELECT s.circuit_probe_at FROM sms_sending_state s WHERE s.id = 1 AND s.circuit_opened_at IS NOT NULL)"

_OPEN = """
    INSERT INTO sms_sending_state AS s (id, circuit_opened_at, circuit_http_status, circuit_code, circuit_reason,
                                        circuit_probe_at, updated_at)
    VALUES (1, now(), $1, $2, left($3, 200), now() + make_interval(secs => $4), now())
    ON CONFLICT (id) DO UPDATE SET
        circuit_opened_at = coalesce(s.circuit_opened_at, EXCLUDED.circuit_opened_at),
        circuit_http_status = EXCLUDED.circuit_http_status,
        circuit_code = EXCLUDED.circuit_code,
        circuit_reason = EXCLUDED.circuit_reason,
        circuit_probe_at = EXCLUDED.circuit_probe_at,
        updated_at = now()
    RETURNING circuit_probe_at, circuit_opened_at = now() AS opened_now
"""
# One sender wins a due probe: the row's lock orders concurrent claims, and a loser's UPDATE, which
# waited for the winner's commit, sees its new `circuit_probe_at` and matches nothing.
_CLAIM_PROBE = """
    UPDATE sms_sending_state SET circuit_probe_at = now() + make_interval(secs => $1), updated_at = now()
    WHERE id = 1 AND circuit_opened_at IS NOT NULL AND circuit_probe_at <= now()
    RETURNING circuit_probe_at
"""
# A loser reads the state again on a fresh snapshot: the winner's next probe time, or closed.
_NEXT_PROBE = f"SELECT {CIRCUIT_SQL}"
_CLOSE = """
    UPDATE sms_sending_state SET circuit_opened_at = NULL, circuit_http_status = NULL, circuit_code = NULL,
                                 circuit_reason = NULL, circuit_probe_at = NULL, updated_at = now()
    WHERE id = 1 AND circuit_opened_at IS NOT NULL
    RETURNING 1
"""


async def open_circuit(connection: asyncpg.Connection, refusal: SmsRejected) -> datetime:
    """Open (or keep open) the circuit after Twilio refused our credentials or account; returns when
    the next probe may go."""
    row = await connection.fetchrow(
        _OPEN, refusal.http_status, refusal.code, str(refusal), PROBE_INTERVAL.total_seconds()
    )
    if row["opened_now"]:
        log.error("sms.sending_circuit_opened", code=refusal.code, http_status=refusal.http_status)
    probe_at: datetime = row["circuit_probe_at"]
    return probe_at


async def claim_probe(connection: asyncpg.Connection, now: datetime) -> Send | Wait:
    """The decision said a probe is due: `Send(probe=True)` for the one sender that wins it, `Wait`
    for the others (or `Send()` if the circuit closed meanwhile)."""
    if await connection.fetchval(_CLAIM_PROBE, PROBE_INTERVAL.total_seconds()) is not None:
        log.info("sms.sending_circuit_probe")
        return Send(probe=True)
    probe_at: datetime | None = await connection.fetchval(_NEXT_PROBE)
    if probe_at is None:
        return Send()
    return Wait(MessageStatus.PAUSED, max(probe_at, now + LOST_PROBE_WAIT), CIRCUIT_REASON)


async def close_circuit(connection: asyncpg.Connection) -> bool:
    """Twilio answered a probe: sending is open again. True when this closed it."""
    closed = await connection.fetchval(_CLOSE) is not None
    if closed:
        log.warning("sms.sending_circuit_closed")
    return closed

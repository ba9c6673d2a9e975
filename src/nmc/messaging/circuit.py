"""The sending circuit: when Twilio refuses our credentials or account, or is down, sending pauses for everyone.

A 401/403 or an account error code (`ACCOUNT_REFUSALS`) is not the text's fault, and every other text
would get the same answer. So the refusal opens the circuit in `sms_sending_state` (one row, shared by
every worker process, cause `account`), the text waits as `paused`, and its event is deferred until
the next probe.

A Twilio outage is not the text's fault either. One 5xx or timeout is retried with the dispatcher's
backoff, but a run of them (`UNAVAILABLE_RUN`, each within `UNAVAILABLE_GAP` of the last, counted
across every sender by `note_unavailable`) opens the circuit with cause `unavailable`: texts then wait
for the probe without spending attempts, so an outage of any length delays them and parks none, and
sending resumes within a probe interval of Twilio's return instead of after an exponential backoff.
A text whose outcome is unknown stays `sending` and is looked up in Twilio before it is sent again.

While the circuit is open the decision (`decide`) answers `Wait` until `circuit_probe_at`, and
`Probe` once it is due: the sender then claims the probe with one atomic UPDATE (`claim_probe`), so one
sender at a time tries Twilio; the others wait. A probe Twilio answers (accepted, or refused for a
reason about the recipient) closes the circuit (`close_circuit`) and releases every deferred text, so
sending resumes by itself. Probes go every `PROBE_INTERVAL`, counted from their start: one that hung
until its timeout is followed by the next within `LOST_PROBE_WAIT` of giving up.

The planning queries read the state with `CIRCUIT_SQL` (a scalar subquery: no extra round trip on
the first-SMS path); a statement more is spent only on opening, on a probe and on closing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import structlog

from nmc.messaging.decision import CIRCUIT_REASON, Send, Wait
from nmc.messaging.sms import SmsOutcomeUnknown, SmsRejected
from nmc.messaging.vocabulary import CircuitCause, MessageStatus

log = structlog.get_logger(module="messaging")

PROBE_INTERVAL = timedelta(seconds=5)  # one text every 5 s while refused; back within ~5 s once accepted
# A sender that lost the race for a due probe waits at least this long (the winner's outcome).
LOST_PROBE_WAIT = timedelta(seconds=1)
# A Twilio outage: this many 5xx/timeouts in a row (any sender), each within UNAVAILABLE_GAP of the last.
UNAVAILABLE_RUN = 3
UNAVAILABLE_GAP = timedelta(seconds=30)

# Published for the senders' planning queries: when the next probe may go while the circuit is open,
# NULL while it is closed (or the row is missing).
CIRCUIT_SQL = "(SELECT s.circuit_probe_at FROM sms_sending_state s WHERE s.id = 1 AND s.circuit_opened_at IS NOT NULL)"

_OPEN = """
    INSERT INTO sms_sending_state AS s (id, circuit_opened_at, circuit_http_status, circuit_code, circuit_reason,
                                        circuit_probe_at, circuit_cause, updated_at)
    VALUES (1, now(), $1, $2, left($3, 200), now() + make_interval(secs => $4), $5, now())
    ON CONFLICT (id) DO UPDATE SET
        circuit_opened_at = coalesce(s.circuit_opened_at, EXCLUDED.circuit_opened_at),
        -- a refused account outranks an outage (it needs a human; an outage heals by itself): an
        -- account-caused circuit keeps its cause and Twilio's answer when a 5xx arrives meanwhile
        (circuit_cause, circuit_http_status, circuit_code, circuit_reason) = (
            SELECT CASE WHEN keep THEN s.circuit_cause ELSE EXCLUDED.circuit_cause END,
                   CASE WHEN keep THEN s.circuit_http_status ELSE EXCLUDED.circuit_http_status END,
                   CASE WHEN keep THEN s.circuit_code ELSE EXCLUDED.circuit_code END,
                   CASE WHEN keep THEN s.circuit_reason ELSE EXCLUDED.circuit_reason END
            FROM (SELECT s.circuit_opened_at IS NOT NULL AND s.circuit_cause = 'account'
                         AND EXCLUDED.circuit_cause <> 'account' AS keep) k),
        -- already open: the probe claimed at its start set the next one a full interval on; a refusal
        -- or timeout arriving later (a hung request) leaves at least LOST_PROBE_WAIT before the next
        circuit_probe_at = CASE WHEN s.circuit_opened_at IS NULL THEN EXCLUDED.circuit_probe_at
                                ELSE greatest(s.circuit_probe_at, now() + make_interval(secs => $6)) END,
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
                                 circuit_reason = NULL, circuit_probe_at = NULL, circuit_cause = NULL,
                                 unavailable_count = 0, circuit_closed_at = now(), updated_at = now()
    WHERE id = 1 AND circuit_opened_at IS NOT NULL
    RETURNING 1
"""
# One more 5xx/timeout in the current run (a run ends after UNAVAILABLE_GAP without one). A request that
# started before the circuit last closed hung through the outage already handled: it counts for nothing.
_NOTE_UNAVAILABLE = """
    WITH stale AS (
        SELECT circuit_opened_at IS NULL AND circuit_closed_at > $2 AS stale FROM sms_sending_state WHERE id = 1
    )
    INSERT INTO sms_sending_state AS s (id, unavailable_count, unavailable_last_at, updated_at)
    SELECT 1, 1, now(), now() WHERE NOT coalesce((SELECT stale FROM stale), false)
    ON CONFLICT (id) DO UPDATE SET
        unavailable_count = CASE WHEN s.unavailable_last_at > now() - make_interval(secs => $1)
                                 THEN s.unavailable_count + 1 ELSE 1 END,
        unavailable_last_at = now(), updated_at = now()
    RETURNING unavailable_count, circuit_opened_at IS NOT NULL AS circuit_open
"""


async def open_circuit(connection: asyncpg.Connection, refusal: SmsRejected) -> datetime:
    """Open (or keep open) the circuit after Twilio refused our credentials or account; returns when
    the next probe may go."""
    return await _open(connection, CircuitCause.ACCOUNT, refusal.http_status, refusal.code, str(refusal))


async def note_unavailable(
    connection: asyncpg.Connection, failure: SmsOutcomeUnknown, started_at: datetime
) -> datetime | None:
    """Count a 5xx/timeout of a request sent at `started_at`; while Twilio looks down (the circuit open,
    or this failure completes a run) return when the next probe may go — the text waits for it without
    spending an attempt. None: one failure among successes, for the dispatcher's backoff."""
    row = await connection.fetchrow(_NOTE_UNAVAILABLE, UNAVAILABLE_GAP.total_seconds(), started_at)
    if row is None or (not row["circuit_open"] and row["unavailable_count"] < UNAVAILABLE_RUN):
        return None
    # Open, or keep open: a retried text that failed was as good as a probe.
    reason = f"Twilio unavailable: {failure}"
    return await _open(connection, CircuitCause.UNAVAILABLE, failure.http_status, None, reason)


async def _open(
    connection: asyncpg.Connection, cause: CircuitCause, http_status: int | None, code: int | None, reason: str
) -> datetime:
    row = await connection.fetchrow(
        _OPEN, http_status, code, reason, PROBE_INTERVAL.total_seconds(), cause, LOST_PROBE_WAIT.total_seconds()
    )
    if row["opened_now"]:
        log.error("sms.sending_circuit_opened", cause=cause, code=code, http_status=http_status)
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


async def retry_gate(connection: asyncpg.Connection, now: datetime) -> Send | Wait:
    """A text whose outcome is unknown (`sending`) skips the decision; while the circuit is open it
    still waits its turn behind the probe (so a stuck backlog does not hammer a Twilio that is down),
    or is the probe itself."""
    probe_at: datetime | None = await connection.fetchval(_NEXT_PROBE)
    if probe_at is None:
        return Send()
    if probe_at > now:
        return Wait(MessageStatus.SENDING, probe_at, CIRCUIT_REASON)
    return await claim_probe(connection, now)


async def close_circuit(connection: asyncpg.Connection) -> bool:
    """Twilio answered a probe: sending is open again. True when this closed it."""
    closed = await connection.fetchval(_CLOSE) is not None
    if closed:
        log.warning("sms.sending_circuit_closed")
    return closed

"""The sending circuit on `/metrics`, read from Postgres at scrape time (any process's refusal opens it,
and the web, which is scraped, sends nothing itself).

`sms_sending_circuit_open{cause}` is 1 while every text waits behind the circuit: `cause="account"`
while Twilio refuses our credentials or account (page at once), `cause="unavailable"` while Twilio is
down (a run of 5xx/timeouts; it heals by itself, page if it lasts);
`sms_sending_circuit_opened_timestamp_seconds{code, reason}` says since when and why.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.messaging.vocabulary import CircuitCause
from nmc.observability.metrics import scrape_time_probe

_STATE = text(
    """
    SELECT extract(epoch FROM circuit_opened_at) AS opened_at, circuit_code, circuit_http_status, circuit_reason,
           coalesce(circuit_cause, 'account') AS cause
    FROM sms_sending_state WHERE id = 1 AND circuit_opened_at IS NOT NULL
    """
)


_PAUSE = text(
    """
    SELECT extract(epoch FROM paused_at) AS paused_at, paused_by, pause_reason, suppressed_after_pause
    FROM sms_sending_state WHERE id = 1
    """
)


@scrape_time_probe
async def operator_pause(session: AsyncSession) -> Iterable[Metric]:
    """The operator's pause (`just pause-sms`) and what resumes suppressed (issue #13)."""
    state = (await session.execute(_PAUSE)).first()
    paused = state is not None and state.paused_at is not None
    since = GaugeMetricFamily(
        "sms_paused_by_operator_since_timestamp_seconds",
        "When an operator paused sending (Unix time); absent while not paused",
        labels=["reason"],
    )
    if state is not None and state.paused_at is not None:
        since.add_metric([state.pause_reason or ""], float(state.paused_at))
    return [
        GaugeMetricFamily(
            "sms_paused_by_operator", "1 while an operator has paused sending (just pause-sms)", value=int(paused)
        ),
        since,
        CounterMetricFamily(
            "sms_suppressed_after_pause",
            "Texts suppressed on resume for having waited longer than PAUSE_MAX_AGE_MINUTES",
            value=state.suppressed_after_pause if state is not None else 0,
        ),
    ]


@scrape_time_probe
async def sending_circuit(session: AsyncSession) -> Iterable[Metric]:
    state = (await session.execute(_STATE)).first()
    open_ = GaugeMetricFamily(
        "sms_sending_circuit_open",
        "1 while no text is sent but one probe every 5 s: Twilio refuses our credentials or account "
        "(cause=account) or is down (cause=unavailable)",
        labels=["cause"],
    )
    for cause in CircuitCause:
        open_.add_metric([cause], int(state is not None and state.cause == cause))
    opened = GaugeMetricFamily(
        "sms_sending_circuit_opened_timestamp_seconds",
        "When the sending circuit opened (Unix time), with Twilio's error code and message; absent while closed",
        labels=["code", "reason"],
    )
    if state is not None:
        code = state.circuit_code if state.circuit_code is not None else state.circuit_http_status
        opened.add_metric([str(code), state.circuit_reason or ""], float(state.opened_at))
    return [open_, opened]

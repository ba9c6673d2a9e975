"""`nmc simulate missed-call`: the synthetic test of runbook §4.6, with correctly signed webhooks."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import httpx
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from nmc.conversations import first_sms_outcome
from nmc.db import session_scope
from nmc.messaging import MessageStatus
from nmc.telephony.models import Call

SENT_STATUSES = frozenset(
    {MessageStatus.ACCEPTED, MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED}
)
STOPPED_STATUSES = frozenset(
    {MessageStatus.SUPPRESSED, MessageStatus.FAILED, MessageStatus.SCHEDULED, MessageStatus.PAUSED}
)


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def signed_headers(url: str, params: dict[str, str], auth_token: str) -> dict[str, str]:
    """The X-Twilio-Signature Twilio would send for this POST (twilio's own algorithm)."""
    return {"X-Twilio-Signature": RequestValidator(auth_token).compute_signature(url, params)}


async def post_signed(
    client: httpx.AsyncClient, base_url: str, path: str, params: dict[str, str], auth_token: str
) -> httpx.Response:
    url = f"{base_url}{path}"
    return await client.post(url, data=params, headers=signed_headers(url, params, auth_token))


def dial_outcome_params(call_sid: str, caller: str, to: str, dial_status: str = "no-answer") -> dict[str, str]:
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "in-progress",
        "Called": to,
        "Caller": caller,
        "DialCallDuration": "0",
        "DialCallSid": "CA" + secrets.token_hex(16),
        "DialCallStatus": dial_status,
        "Direction": "inbound",
        "From": caller,
        "To": to,
    }


@dataclass(frozen=True)
class SimulationResult:
    call_sid: str
    webhook_status: int
    message_status: str | None
    latency_ms: float | None  # recorded by the worker: webhook received → Twilio accepted
    wall_ms: float  # this command: webhook sent → message seen as sent


async def simulate_missed_call(
    to: str, caller: str, *, base_url: str, auth_token: str, timeout: float = 15.0
) -> SimulationResult:
    call_sid = new_call_sid()
    incoming = {"CallSid": call_sid, "From": caller, "To": to, "CallStatus": "ringing", "Direction": "inbound"}
    async with httpx.AsyncClient(timeout=10) as client:
        await post_signed(client, base_url, "/webhooks/twilio/voice", incoming, auth_token)
        started = time.perf_counter()
        response = await post_signed(
            client,
            base_url,
            "/webhooks/twilio/voice/dial-status",
            dial_outcome_params(call_sid, caller, to),
            auth_token,
        )
    status, latency = await wait_for_first_sms(call_sid, timeout)
    return SimulationResult(call_sid, response.status_code, status, latency, (time.perf_counter() - started) * 1000)


async def wait_for_first_sms(call_sid: str, timeout: float) -> tuple[str | None, float | None]:
    """The first SMS's status and recorded latency once it is sent, or where it stopped."""
    deadline = time.monotonic() + timeout
    status: str | None = None
    while time.monotonic() < deadline:
        async with session_scope() as session:
            call_id = await session.scalar(select(Call.id).where(Call.call_sid == call_sid))
            found = await first_sms_outcome(session, call_id) if call_id else None
        if found is not None:
            status = found.status
            if found.status in SENT_STATUSES and found.latency_ms is not None:
                return found.status, found.latency_ms
            if found.status in STOPPED_STATUSES:
                return found.status, None
        await asyncio.sleep(0.05)
    return status, None

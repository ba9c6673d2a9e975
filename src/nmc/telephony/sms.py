"""Sending SMS through the Twilio Messages API (or the console, with no credentials).

httpx straight to the REST API rather than twilio-python's client: the SDK's async transport is
aiohttp with its own session per client and adds a layer we would have to work around to keep one
warm keep-alive pool on the first-SMS path. The wire format is the documented one (providers.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
import structlog

from nmc.observability.logging import mask_phone
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="telephony")

SEND_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
UNSUBSCRIBED = 21610
LANDLINE = 30006


@dataclass(frozen=True)
class Accepted:
    sid: str
    status: str


class SmsRejected(Exception):
    """Twilio answered 4xx: the text was not created and retrying the same request cannot help."""

    def __init__(self, http_status: int, code: int | None, message: str) -> None:
        super().__init__(f"Twilio {http_status} code {code}: {message}")
        self.http_status = http_status
        self.code = code


class SmsOutcomeUnknown(Exception):
    """5xx, timeout or a broken connection: the text may or may not exist; look it up before resending."""


class SmsSender(Protocol):
    async def send(self, to: str, from_: str, body: str) -> Accepted: ...

    async def find_sent(self, to: str, from_: str, body: str, since: datetime) -> Accepted | None: ...


class TwilioSmsSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._path = f"/2010-04-01/Accounts/{settings.TWILIO_ACCOUNT_SID}/Messages.json"
        self._client = httpx.AsyncClient(
            base_url=settings.TWILIO_API_BASE_URL,
            auth=(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN),
            timeout=SEND_TIMEOUT,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )

    async def send(self, to: str, from_: str, body: str) -> Accepted:
        form = {
            "To": to,
            "From": from_,
            "Body": body,
            "StatusCallback": self._settings.public_url("/webhooks/twilio/sms/status"),
        }
        if self._settings.TWILIO_MESSAGING_SERVICE_SID:
            form["MessagingServiceSid"] = self._settings.TWILIO_MESSAGING_SERVICE_SID
        try:
            response = await self._client.post(self._path, data=form)
        except httpx.HTTPError as exc:
            raise SmsOutcomeUnknown(f"{type(exc).__name__} talking to Twilio") from exc
        if response.status_code >= 500:
            raise SmsOutcomeUnknown(f"Twilio {response.status_code}")
        payload = _json(response)
        if response.status_code >= 400:
            raise SmsRejected(response.status_code, payload.get("code"), str(payload.get("message", "")))
        return Accepted(sid=payload["sid"], status=payload.get("status", "queued"))

    async def find_sent(self, to: str, from_: str, body: str, since: datetime) -> Accepted | None:
        """Our text in Twilio's Messages list (To, From, DateSent>), created at or after `since`."""
        params = {
            "To": to,
            "From": from_,
            "DateSent>": (since - timedelta(days=1)).date().isoformat(),
            "PageSize": "50",
        }
        try:
            response = await self._client.get(self._path, params=params)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise SmsOutcomeUnknown(f"lookup failed: {type(exc).__name__}") from exc
        for message in _json(response).get("messages", []):
            if message.get("body") == body and _created_at(message) >= since - timedelta(seconds=5):
                return Accepted(sid=message["sid"], status=message.get("status", "queued"))
        return None


class ConsoleSmsSender:
    """No Twilio credentials (a laptop): print the text and call it sent."""

    def __init__(self) -> None:
        self._sent: dict[tuple[str, str, str], Accepted] = {}

    async def send(self, to: str, from_: str, body: str) -> Accepted:
        accepted = Accepted(sid=f"SMconsole{len(self._sent):023d}", status="sent")
        self._sent[(to, from_, body)] = accepted
        log.info("sms.console_sent", to=mask_phone(to), from_number=mask_phone(from_))
        print(f"[console sms] {mask_phone(from_)} → {mask_phone(to)}: {body}", file=sys.stderr, flush=True)
        return accepted

    async def find_sent(self, to: str, from_: str, body: str, since: datetime) -> Accepted | None:
        return self._sent.get((to, from_, body))


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _created_at(message: dict[str, Any]) -> datetime:
    return parsedate_to_datetime(message.get("date_created") or message["date_updated"])


_sender: SmsSender | None = None


def get_sender() -> SmsSender:
    global _sender
    if _sender is None:
        settings = get_settings()
        _sender = TwilioSmsSender(settings) if settings.twilio_configured else ConsoleSmsSender()
    return _sender

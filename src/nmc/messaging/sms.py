"""Sending SMS through the Twilio Messages API (or the console, with no credentials).

aiohttp straight to the REST API rather than twilio-python's client or httpx: this request sits
on the first-SMS path (P95 budget 15 ms), where httpx cost more CPU than the rest of the worker's
work per text (profiled) and the SDK adds its own session handling on top of aiohttp. The wire
format is the documented one (providers.md); one warm keep-alive pool serves the process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp
import structlog

from nmc.observability.logging import mask_phone
from nmc.observability.providers import Timer, failure_outcome, observe_request, status_outcome
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="messaging")

SEND_TIMEOUT = aiohttp.ClientTimeout(total=10.0, connect=3.0)
LOOKUP_TIMEOUT = aiohttp.ClientTimeout(total=3.0, connect=1.0)


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


def twilio_auth_header(settings: Settings) -> dict[str, str]:
    """HTTP basic auth with the account SID and auth token, as every Twilio REST API takes it."""
    return {"Authorization": aiohttp.encode_basic_auth(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN)}


class TwilioSmsSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._url = f"{settings.TWILIO_API_BASE_URL}/2010-04-01/Accounts/{settings.TWILIO_ACCOUNT_SID}/Messages.json"
        self._auth_header = twilio_auth_header(settings)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._auth_header,
                timeout=SEND_TIMEOUT,
                connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=60),
            )
        return self._session

    async def send(self, to: str, from_: str, body: str) -> Accepted:
        form = {
            "To": to,
            "From": from_,
            "Body": body,
            "StatusCallback": self._settings.public_url("/webhooks/twilio/sms/status"),
        }
        if self._settings.TWILIO_MESSAGING_SERVICE_SID:
            form["MessagingServiceSid"] = self._settings.TWILIO_MESSAGING_SERVICE_SID
        timer = Timer()
        try:
            async with self._client().post(self._url, data=form) as response:
                status = response.status
                payload = await _json(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            observe_request("twilio", "messages.create", failure_outcome(exc), None, timer.seconds)
            raise SmsOutcomeUnknown(f"{type(exc).__name__} talking to Twilio") from exc
        observe_request("twilio", "messages.create", status_outcome(status), status, timer.seconds)
        if status >= 500:
            raise SmsOutcomeUnknown(f"Twilio {status}")
        if status >= 400:
            raise SmsRejected(status, payload.get("code"), str(payload.get("message", "")))
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
            async with self._client().get(self._url, params=params) as response:
                response.raise_for_status()
                payload = await _json(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SmsOutcomeUnknown(f"lookup failed: {type(exc).__name__}") from exc
        for message in payload.get("messages", []):
            if message.get("body") == body and _created_at(message) >= since - timedelta(seconds=5):
                return Accepted(sid=message["sid"], status=message.get("status", "queued"))
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ConsoleSmsSender:
    """No Twilio credentials (a laptop): print the text and call it sent."""

    def __init__(self) -> None:
        self._sent: dict[tuple[str, str, str], Accepted] = {}

    async def send(self, to: str, from_: str, body: str) -> Accepted:
        accepted = Accepted(sid=f"SMconsole{len(self._sent):023d}", status="sent")
        self._sent[(to, from_, body)] = accepted
        log.info("sms.console_sent", to=to, from_number=from_)
        print(f"[console sms] {mask_phone(from_)} → {mask_phone(to)}: {body}", file=sys.stderr, flush=True)
        return accepted

    async def find_sent(self, to: str, from_: str, body: str, since: datetime) -> Accepted | None:
        return self._sent.get((to, from_, body))


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        data = await response.json(content_type=None)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _created_at(message: dict[str, Any]) -> datetime:
    return parsedate_to_datetime(message.get("date_created") or message["date_updated"])


class LookupFailed(Exception):
    """The line-type lookup did not answer usably; callers fail open (the text is sent)."""


class LineTypeLookup:
    """Twilio Lookup v2 line type intelligence (`GET /v2/PhoneNumbers/{number}?Fields=line_type_intelligence`)."""

    def __init__(self, settings: Settings) -> None:
        self._base_url = settings.TWILIO_LOOKUP_BASE_URL
        self._auth_header = twilio_auth_header(settings)
        self._session: aiohttp.ClientSession | None = None

    async def line_type(self, number: str) -> str:
        """`landline`, `mobile`, `fixedVoip`, `nonFixedVoip`, `tollFree`, ... or `unknown`."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._auth_header, timeout=LOOKUP_TIMEOUT)
        url = f"{self._base_url}/v2/PhoneNumbers/{quote(number)}"
        timer = Timer()
        try:
            async with self._session.get(url, params={"Fields": "line_type_intelligence"}) as response:
                status = response.status
                payload = await _json(response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            observe_request("twilio", "lookup.line_type", failure_outcome(exc), None, timer.seconds)
            raise LookupFailed(f"{type(exc).__name__} talking to Twilio Lookup") from exc
        observe_request("twilio", "lookup.line_type", status_outcome(status), status, timer.seconds)
        if status == 404:
            return "unknown"
        if status >= 400:
            raise LookupFailed(f"Twilio Lookup {status} code {payload.get('code')}")
        intelligence = payload.get("line_type_intelligence")
        if not isinstance(intelligence, dict):
            return "unknown"
        return str(intelligence.get("type") or "unknown")


_sender: SmsSender | None = None
_lookup: LineTypeLookup | None = None


def get_sender() -> SmsSender:
    """The process's sender: Twilio's Messages API with credentials, the console without."""
    global _sender
    if _sender is None:
        settings = get_settings()
        _sender = TwilioSmsSender(settings) if settings.twilio_configured else ConsoleSmsSender()
    return _sender


def get_line_type_lookup() -> LineTypeLookup | None:
    """None without Twilio credentials (console backend): nothing to ask."""
    global _lookup
    settings = get_settings()
    if not settings.twilio_configured:
        return None
    if _lookup is None:
        _lookup = LineTypeLookup(settings)
    return _lookup


def use_sms_clients(sender: SmsSender | None = None, lookup: LineTypeLookup | None = None) -> None:
    """Inject the sender and Lookup client (tests, tools); None: built again from the settings on next use."""
    global _sender, _lookup
    _sender, _lookup = sender, lookup

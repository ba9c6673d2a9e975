"""Sending SMS through the Twilio Messages API (or the console, with no credentials).

aiohttp straight to the REST API rather than twilio-python's client or httpx: this request sits
on the first-SMS path (P95 budget 15 ms), where httpx cost more CPU than the rest of the worker's
work per text (profiled) and the SDK adds its own session handling on top of aiohttp. The wire
format is the documented one (providers.md); one warm keep-alive pool serves the process.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote
from uuid import uuid4

import aiohttp
import structlog

from nmc.messaging.vocabulary import ACCOUNT_REFUSALS, RATE_LIMITED_STATUS, RECIPIENT_REFUSALS
from nmc.observability.logging import mask_phone
from nmc.observability.providers import Timer, failure_outcome, observe_request, status_outcome
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="messaging")

# Twilio answers a Messages request in well under a second; a hung one is given up on (and looked up
# before any resend) after 5 s.
SEND_TIMEOUT = aiohttp.ClientTimeout(total=5.0, connect=2.0)
LOOKUP_TIMEOUT = aiohttp.ClientTimeout(total=3.0, connect=1.0)
# The Messages-list lookup after an unknown outcome: pages of this size, at most this many (1,000 texts
# between one tenant number and one caller since the attempt is far beyond any conversation).
LOOKUP_PAGE_SIZE = 50
LOOKUP_MAX_PAGES = 20
LOOKUP_CLOCK_SLACK = timedelta(seconds=5)  # Twilio's clock against ours


@dataclass(frozen=True)
class Accepted:
    sid: str
    status: str


class SmsRejected(Exception):
    """Twilio answered 4xx: the text was not created by this request.

    The subclasses say whose refusal it is; a plain `SmsRejected` is a refusal we do not know (the
    event is parked for a human).
    """

    def __init__(self, http_status: int, code: int | None, message: str) -> None:
        super().__init__(f"Twilio {http_status} code {code}: {message}")
        self.http_status = http_status
        self.code = code
        # Set when the refusal answered the lookup of an earlier attempt whose outcome is unknown:
        # that attempt may still have created the text.
        self.text_may_exist = False


class SmsRecipientRefused(SmsRejected):
    """A refusal about the recipient (opted out, invalid, landline, unreachable): final for this text."""


class SmsAccountRefused(SmsRejected):
    """Our credentials or account were refused (401, 403, 20003, 20005, ...): every text would be."""


class SmsRateLimited(SmsRejected):
    """429: Twilio did not process the request; try again after `retry_after` seconds (None: not said)."""

    def __init__(self, http_status: int, code: int | None, message: str, retry_after: float | None) -> None:
        super().__init__(http_status, code, message)
        self.retry_after = retry_after


def refusal(http_status: int, code: int | None, message: str, retry_after: str | None = None) -> SmsRejected:
    """The refusal a Twilio 4xx answer stands for."""
    if http_status == RATE_LIMITED_STATUS:
        return SmsRateLimited(http_status, code, message, retry_after_seconds(retry_after))
    if http_status in (401, 403) or code in ACCOUNT_REFUSALS:
        return SmsAccountRefused(http_status, code, message)
    if code in RECIPIENT_REFUSALS:
        return SmsRecipientRefused(http_status, code, message)
    return SmsRejected(http_status, code, message)


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds (it may be a number of seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class SmsOutcomeUnknown(Exception):
    """5xx, timeout or a broken connection: the text may or may not exist; look it up before resending.
    `http_status`: Twilio's status when it answered (None: no answer)."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


# Twilio's smart encoding (on for a Messaging Service) replaces characters that have a GSM-7 look-alike
# before storing and sending the text, so the body Twilio lists may differ from the one we sent. The
# common ones: quotes, dashes, ellipsis, bullets, odd spaces and invisible characters.
_SMART_ENCODING = str.maketrans(
    {
        **dict.fromkeys("\u00ab\u00bb\u201c\u201d\u201e\u201f\u02ba\u02ee\u275d\u275e\u301d\u301e\uff02", '"'),
        **dict.fromkeys("\u2018\u2019\u201b\u02b9\u02bb\u02bc\u02bd\u02c8\u02ca\u02cb\u00b4\u0060\uff07", "'"),
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\u2022\ufe63\uff0d", "-"),
        **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a", " "),
        **dict.fromkeys("\u202f\u205f\u3000\u2028\u2029\t", " "),
        **dict.fromkeys("\u200b\u2060\ufeff", ""),
        "\u2026": "...",
        "\u201a": ",",
        "\u2039": "<",
        "\u203a": ">",
        "\u203c": "!!",
        "\u00bc": "1/4",
        "\u00bd": "1/2",
        "\u00be": "3/4",
    }
)


def comparable_body(body: str) -> str:
    """A body as it can be compared with Twilio's copy: smart encoding applied, whitespace runs as one
    space, no leading or trailing whitespace."""
    return " ".join(body.translate(_SMART_ENCODING).split())


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
                retry_after = response.headers.get("Retry-After")
                payload = await _json(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            observe_request("twilio", "messages.create", failure_outcome(exc), None, timer.seconds)
            raise SmsOutcomeUnknown(f"{type(exc).__name__} talking to Twilio") from exc
        observe_request("twilio", "messages.create", status_outcome(status), status, timer.seconds)
        if status >= 500:
            raise SmsOutcomeUnknown(f"Twilio {status}", status)
        if status >= 400:
            raise refusal(status, payload.get("code"), str(payload.get("message", "")), retry_after)
        return Accepted(sid=payload["sid"], status=payload.get("status", "queued"))

    async def find_sent(self, to: str, from_: str, body: str, since: datetime) -> Accepted | None:
        """Our text in Twilio's Messages list (To, From), created at or after `since` (less a clock slack).

        No `DateSent` filter: Twilio leaves `date_sent` empty while a text is queued or accepted, and
        such a text is exactly what an attempt with an unknown outcome may have left. The list is newest
        first; pages are followed through `next_page_uri` until one reaches texts older than the attempt.
        Bodies are compared as Twilio may have stored them (`comparable_body`).
        """
        cutoff = since - LOOKUP_CLOCK_SLACK
        wanted = comparable_body(body)
        url: str = self._url
        params: dict[str, str] | None = {"To": to, "From": from_, "PageSize": str(LOOKUP_PAGE_SIZE)}
        for _ in range(LOOKUP_MAX_PAGES):
            payload = await self._list_page(url, params)
            reached_older = False
            for message in payload.get("messages", []):
                if _created_at(message) < cutoff:
                    reached_older = True
                elif comparable_body(str(message.get("body") or "")) == wanted:
                    return Accepted(sid=message["sid"], status=message.get("status", "queued"))
            next_page = payload.get("next_page_uri")
            if reached_older or not next_page:
                return None
            url, params = f"{self._settings.TWILIO_API_BASE_URL}{next_page}", None
        log.warning("sms.lookup_gave_up", pages=LOOKUP_MAX_PAGES, to=to)
        return None

    async def _list_page(self, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        timer = Timer()
        try:
            async with self._client().get(url, params=params) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                payload = await _json(response)
        except (TimeoutError, aiohttp.ClientError) as exc:
            observe_request("twilio", "messages.list", failure_outcome(exc), None, timer.seconds)
            raise SmsOutcomeUnknown(f"lookup failed: {type(exc).__name__}") from exc
        observe_request("twilio", "messages.list", status_outcome(status), status, timer.seconds)
        if status in (401, 403, RATE_LIMITED_STATUS):
            raise refusal(status, payload.get("code"), str(payload.get("message", "")), retry_after)
        if status >= 400:
            raise SmsOutcomeUnknown(f"lookup failed: Twilio {status}", status)
        return payload

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class ConsoleSmsSender:
    """No Twilio credentials (a laptop): print the text and call it sent.

    Its SIDs look like Twilio's (`SM` + 32 hex digits) and are unique across restarts: `just dev`
    restarted against the same database must not meet a SID it recorded before (`twilio_sid` is unique).
    """

    def __init__(self) -> None:
        self._sent: dict[tuple[str, str, str], Accepted] = {}

    async def send(self, to: str, from_: str, body: str) -> Accepted:
        accepted = Accepted(sid=f"SM{uuid4().hex}", status="sent")
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

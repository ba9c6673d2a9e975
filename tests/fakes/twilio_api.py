"""Fake Twilio REST API (Messages resource, Lookup v2 line type; phone numbers, a Messaging Service's
numbers and Calls create: see their section) speaking Twilio's real wire format.

Twilio's semantics it models: a created text is `queued` (`accepted` with a Messaging Service) with a
null `date_sent` until it is sent (`FakeTwilio.set_status`), and the list's `DateSent` filters leave such
texts out; the list is newest first, paged with `PageSize` and `next_page_uri`; smart encoding (a
Messaging Service, or `SmartEncoded=true`) stores and lists the body with GSM look-alikes for curly
quotes, dashes, ellipses and odd spaces, trailing whitespace trimmed; a scripted 429 may carry
`Retry-After`.

Run standalone::

    python -m tests.fakes.twilio_api --port 0 --account-sid AC... --auth-token T

It prints ``READY http://127.0.0.1:<port>`` once listening. From pytest use
:class:`FakeTwilio`, which launches that runner as a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import gc
import json
import os
import queue
import secrets
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, parse_qsl, urlencode

import httpx
import uvicorn

from tests.fakes._asgi import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    bind_socket,
    drain_lifespan,
    header_pairs,
    make_server,
    read_request,
    send_json,
    socket_url,
)

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "fake-auth-token"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

ERROR_MESSAGES: dict[int, str] = {
    20001: "Invalid request parameter",
    20003: "Authenticate",
    20004: "Method not allowed",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service unavailable",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    30006: "Landline or unreachable carrier",
}
DEFAULT_CODE_FOR_STATUS: dict[int, int] = {400: 20001, 401: 20003, 404: 20404, 429: 20429, 503: 20503}
SCRIPT_KEYS = frozenset({"status", "code", "message", "delay", "drop_after_create", "retry_after"})
# Statuses after which a text has a `date_sent` (Twilio sets it when the text leaves).
SENT_STATUSES = frozenset({"sent", "delivered", "undelivered", "failed", "read"})
# What Twilio's smart encoding replaces (the common part of its table).
SMART_ENCODING = str.maketrans(
    {
        "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"', "\u2018": "'", "\u2019": "'",
        "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2010": "-", "\u2212": "-", "\u2022": "-",
        "\u2026": "...", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u200b": "",
    }
)  # fmt: skip
OUTAGE_KEYS = SCRIPT_KEYS | {"retry_after", "drop_if_client_leaves"}
PAGING_KEYS = frozenset({"Page", "PageSize", "PageToken"})
GSM7_CHARS = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)

Form = dict[str, list[str]]
Script = dict[str, Any]


# --------------------------------------------------------------------------- wire format


def twilio_error(status: int, code: int | None = None, message: str | None = None) -> Response:
    code = code or DEFAULT_CODE_FOR_STATUS.get(status, 20500)
    payload = {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Response(status, payload)


def unauthorized() -> Response:
    response = twilio_error(401, 20003)
    response.headers = header_pairs([("www-authenticate", 'Basic realm="Twilio API"')])
    return response


def not_found(path: str) -> Response:
    return twilio_error(404, 20404, f"The requested resource {path} was not found")


def rfc2822(moment: datetime) -> str:
    return format_datetime(moment.replace(microsecond=0))


def count_segments(body: str) -> int:
    if not body:
        return 1
    single, multi = (160, 153) if set(body) <= GSM7_CHARS else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


def first(form: Form, key: str) -> str | None:
    values = form.get(key)
    return values[0] if values else None


def flatten_form(form: Form) -> dict[str, str | list[str]]:
    return {key: values[0] if len(values) == 1 else values for key, values in form.items()}


def smart_encoded(form: Form) -> bool:
    """Twilio's `SmartEncoded`; a Messaging Service has it on unless the request says false."""
    flag = (first(form, "SmartEncoded") or "").lower()
    return flag == "true" or (flag != "false" and bool(first(form, "MessagingServiceSid")))


def build_message(account_sid: str, form: Form, now: datetime) -> dict[str, Any]:
    sid = "SM" + secrets.token_hex(16)
    base = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    body = first(form, "Body") or ""
    if smart_encoded(form):
        body = body.translate(SMART_ENCODING).rstrip()
    service_sid = first(form, "MessagingServiceSid")
    stamp = rfc2822(now)
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": stamp,
        "date_sent": None,
        "date_updated": stamp,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": first(form, "From"),
        "messaging_service_sid": service_sid,
        "num_media": str(len(form.get("MediaUrl", []))),
        "num_segments": str(count_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "accepted" if service_sid else "queued",
        "subresource_uris": {"media": f"{base}/Media.json", "feedback": f"{base}/Feedback.json"},
        "to": first(form, "To"),
        "uri": f"{base}.json",
    }


def validate_create(form: Form) -> Response | None:
    if not first(form, "To"):
        return twilio_error(400, 21604)
    if not (first(form, "Body") or first(form, "MediaUrl") or first(form, "ContentSid")):
        return twilio_error(400, 21602)
    if not (first(form, "From") or first(form, "MessagingServiceSid")):
        return twilio_error(400, 21603)
    return None


def basic_credentials(headers: Mapping[bytes, bytes]) -> tuple[str, str] | None:
    scheme, _, encoded = headers.get(b"authorization", b"").partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


# --------------------------------------------------------------------------- list filtering


def _date_bound(value: str, upper: bool) -> datetime:
    """Twilio date filters take YYYY-MM-DD (the SDK may send a full ISO timestamp)."""
    if len(value) == 10:
        day = date.fromisoformat(value)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if upper else start
    moment = datetime.fromisoformat(value)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment + timedelta(microseconds=1) if upper else moment


@dataclass(frozen=True, slots=True)
class ListFilter:
    to: str | None = None
    from_: str | None = None
    not_before: datetime | None = None
    before: datetime | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ListFilter:
        """``DateSent>`` means on-or-after, ``DateSent<`` on-or-before, ``DateSent`` that day; a text not
        sent yet (``date_sent`` null) matches no date filter."""
        lower = params.get("DateSent>") or params.get("DateSent")
        upper = params.get("DateSent<") or params.get("DateSent")
        return cls(
            to=params.get("To"),
            from_=params.get("From"),
            not_before=_date_bound(lower, upper=False) if lower else None,
            before=_date_bound(upper, upper=True) if upper else None,
        )

    def matches(self, message: StoredMessage) -> bool:
        resource = message.resource
        return (
            (self.to is None or resource["to"] == self.to)
            and (self.from_ is None or resource["from"] == self.from_)
            and (self.not_before is None or (message.sent is not None and message.sent >= self.not_before))
            and (self.before is None or (message.sent is not None and message.sent < self.before))
        )


def build_page(path: str, params: Mapping[str, str], selected: Sequence[StoredMessage]) -> dict[str, Any]:
    size = max(1, min(int(params.get("PageSize", "50")), 1000))
    page = max(0, int(params.get("Page", "0")))
    start = page * size
    chunk = selected[start : start + size]
    filters = [(key, value) for key, value in params.items() if key not in PAGING_KEYS]

    def uri(number: int) -> str:
        return f"{path}?{urlencode([*filters, ('PageSize', str(size)), ('Page', str(number))])}"

    return {
        "messages": [message.resource for message in chunk],
        "page": page,
        "page_size": size,
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1) if start + size < len(selected) else None,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
        "uri": uri(page),
        "start": start,
        "end": start + max(len(chunk) - 1, 0),
    }


# --------------------------------------------------------------------------- state


@dataclass(slots=True)
class StoredMessage:
    resource: dict[str, Any]
    created: datetime
    sent: datetime | None = None  # `date_sent`: None while queued or accepted


def validate_script(responses: Any) -> list[Script]:
    if not isinstance(responses, list):
        raise ValueError("'responses' must be a list")
    for item in responses:
        if not isinstance(item, dict) or not set(item) <= SCRIPT_KEYS:
            raise ValueError(f"bad scripted response {item!r}; allowed keys: {sorted(SCRIPT_KEYS)}")
        status = item.get("status")
        if status is not None and not (isinstance(status, int) and 400 <= status <= 599):
            raise ValueError(f"scripted status must be an int in 400..599, got {status!r}")
        if "retry_after" in item and not isinstance(item["retry_after"], (int, float, str)):
            raise ValueError(f"scripted retry_after must be seconds or an HTTP date, got {item['retry_after']!r}")
    return responses


def validate_outage(outage: Any) -> Script:
    """An outage is a scripted response for every Messages request until healed; ``retry_after`` adds
    the header, and without ``status`` it is latency only (``delay``, then the normal answer)."""
    if not isinstance(outage, dict) or not set(outage) <= OUTAGE_KEYS:
        raise ValueError(f"bad outage {outage!r}; allowed keys: {sorted(OUTAGE_KEYS)}")
    validate_script([{key: value for key, value in outage.items() if key in SCRIPT_KEYS - {"retry_after"}}])
    return outage


# Set per request while a latency outage with `drop_if_client_leaves` runs: the client hung up.
_CLIENT_GONE: ContextVar[asyncio.Event | None] = ContextVar("fake_twilio_client_gone", default=None)


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


@dataclass
class TwilioState:
    account_sid: str
    auth_token: str
    records: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    scripts: deque[Script] = field(default_factory=deque)
    scripts_by_to: dict[str, deque[Script]] = field(default_factory=dict)
    line_types: dict[str, str] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.records.clear()
        self.messages.clear()
        self.scripts.clear()
        self.scripts_by_to.clear()
        self.line_types.clear()
        self.lookups.clear()

    def add_scripts(self, responses: list[Script], to: str | None) -> None:
        target = self.scripts if to is None else self.scripts_by_to.setdefault(to, deque())
        target.extend(responses)

    def pop_script(self, to: str | None) -> Script | None:
        """A script bound to this ``To`` wins over the global queue."""
        specific = self.scripts_by_to.get(to or "")
        if specific:
            return specific.popleft()
        return self.scripts.popleft() if self.scripts else None

    def record(self, received_at: float, account_sid: str, form: Form) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "received_at": received_at,
            "account_sid": account_sid,
            "form": flatten_form(form),
            "sid": None,
            "status": None,
            "script": None,
        }
        self.records.append(entry)
        return entry

    def create_message(self, account_sid: str, form: Form) -> dict[str, Any]:
        now = datetime.now(UTC)
        resource = build_message(account_sid, form, now)
        self.messages[resource["sid"]] = StoredMessage(resource, now)
        return resource

    def set_status(self, sid: str, status: str) -> dict[str, Any] | None:
        """Move a text on (as Twilio does when it sends or delivers it); `date_sent` is set once sent."""
        stored = self.messages.get(sid)
        if stored is None:
            return None
        now = datetime.now(UTC)
        stored.resource["status"] = status
        stored.resource["date_updated"] = rfc2822(now)
        if status in SENT_STATUSES and stored.sent is None:
            stored.sent = now
            stored.resource["date_sent"] = rfc2822(now)
        return stored.resource

    def select(self, account_sid: str, wanted: ListFilter) -> list[StoredMessage]:
        """Newest first, like Twilio."""
        return [
            message
            for message in reversed(self.messages.values())
            if message.resource["account_sid"] == account_sid and wanted.matches(message)
        ]


# --------------------------------------------------------------------------- ASGI app

MESSAGES_PREFIX = f"/{API_VERSION}/Accounts/"
LOOKUP_PREFIX = "/v2/PhoneNumbers/"
DEFAULT_LINE_TYPE = "mobile"


def lookup_resource(number: str, line_type: str) -> dict[str, Any]:
    """Lookup v2 with ``Fields=line_type_intelligence`` (the other data packages stay null)."""
    return {
        "calling_country_code": "1",
        "country_code": "US",
        "phone_number": number,
        "national_format": number,
        "valid": True,
        "validation_errors": [],
        "caller_name": None,
        "sim_swap": None,
        "call_forwarding": None,
        "line_status": None,
        "line_type_intelligence": {
            "error_code": None,
            "mobile_country_code": "310" if line_type == "mobile" else None,
            "mobile_network_code": "456" if line_type == "mobile" else None,
            "carrier_name": "Fake Carrier",
            "type": line_type,
        },
        "identity_match": None,
        "reassigned_number": None,
        "sms_pumping_risk": None,
        "phone_number_quality_score": None,
        "pre_fill": None,
        "url": f"https://lookups.twilio.com{LOOKUP_PREFIX}{number}",
    }


def parse_messages_path(path: str) -> tuple[str, str | None] | None:
    """``/2010-04-01/Accounts/{AC}/Messages.json`` -> (AC, None); ``.../Messages/{SM}.json`` -> (AC, SM)."""
    if not path.startswith(MESSAGES_PREFIX) or not path.endswith(".json"):
        return None
    parts = path[len(MESSAGES_PREFIX) : -len(".json")].split("/")
    if len(parts) == 2 and parts[1] == "Messages":
        return parts[0], None
    if len(parts) == 3 and parts[1] == "Messages":
        return parts[0], parts[2]
    return None


# --------------------------------------------------------------------------- phone numbers and calls (issue #15)
#
# AvailablePhoneNumbers (Local), IncomingPhoneNumbers (create/fetch/update/delete/list), a Messaging
# Service's PhoneNumbers (messaging.twilio.com's `/v1/Services/{MG}/PhoneNumbers`, served here too:
# point TWILIO_MESSAGING_API_BASE_URL at this fake) and Calls create, in Twilio's wire format: list
# pages under a resource key, `capabilities` spelled `SMS`/`MMS` in AvailablePhoneNumbers and `sms`/`mms`
# in IncomingPhoneNumbers, 400 code 21422 for a number no longer available, 409 code 21710 for a number
# already in the service, 404 code 20404 for a released number, 204 for a delete. Numbers scripts
# (`POST /_fake/numbers/script`) answer the next IncomingPhoneNumbers create with an error, after
# creating it with ``drop_after_create`` (our commit-failed-after-Twilio's case).

NUMBERS_ERRORS: dict[int, str] = {
    21421: "PhoneNumber is invalid",
    21422: "PhoneNumber is not available",
    21452: "No phone numbers found",
    21710: "Phone Number or Short Code is already in the Messaging Service.",
    21212: "Invalid 'From' phone number",
    21201: "No 'To' number is specified",
    21205: "Url is not a valid URL",
}
INCOMING_UPDATABLE = (
    "FriendlyName", "VoiceUrl", "VoiceMethod", "VoiceFallbackUrl", "VoiceFallbackMethod", "StatusCallback",
    "StatusCallbackMethod", "SmsUrl", "SmsMethod", "SmsFallbackUrl", "SmsFallbackMethod",
)  # fmt: skip
NUMBER_SCRIPT_KEYS = frozenset({"status", "code", "message", "delay", "drop_after_create"})


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


def default_inventory() -> list[dict[str, Any]]:
    """Local numbers on sale: a few area codes, each number SMS and voice capable unless said otherwise."""
    places = [
        ("415", "San Francisco", "CA", "94107"),
        ("512", "Austin", "TX", "78701"),
        ("617", "Boston", "MA", "02108"),
    ]
    inventory = []
    for area, locality, region, postal in places:
        for n in range(1, 6):
            inventory.append(available_number(f"+1{area}555{n:04d}", locality, region, postal))
    inventory.append(available_number("+14155550999", "San Francisco", "CA", "94107", sms=False))  # voice only
    return inventory


def available_number(
    number: str, locality: str = "San Francisco", region: str = "CA", postal_code: str = "94107", *,
    sms: bool = True, voice: bool = True,
) -> dict[str, Any]:  # fmt: skip
    return {
        "friendly_name": f"({number[2:5]}) {number[5:8]}-{number[8:]}",
        "phone_number": number,
        "lata": "722",
        "locality": locality,
        "rate_center": locality.upper().replace(" ", ""),
        "latitude": "37.780000",
        "longitude": "-122.400000",
        "region": region,
        "postal_code": postal_code,
        "iso_country": "US",
        "address_requirements": "none",
        "beta": False,
        "capabilities": {"voice": voice, "SMS": sms, "MMS": sms, "fax": False},
    }


def _twilio_page(key: str, path: str, params: Mapping[str, str], items: Sequence[Any]) -> dict[str, Any]:
    size = max(1, min(int(params.get("PageSize", "50")), 1000))
    page = max(0, int(params.get("Page", "0")))
    start = page * size
    chunk = list(items[start : start + size])
    filters = [(k, v) for k, v in params.items() if k not in PAGING_KEYS]

    def uri(number: int) -> str:
        return f"{path}?{urlencode([*filters, ('PageSize', str(size)), ('Page', str(number))])}"

    return {
        key: chunk,
        "page": page,
        "page_size": size,
        "first_page_uri": uri(0),
        "next_page_uri": uri(page + 1) if start + size < len(items) else None,
        "previous_page_uri": uri(page - 1) if page > 0 else None,
        "uri": uri(page),
        "start": start,
        "end": start + max(len(chunk) - 1, 0),
    }


@dataclass
class NumbersState:
    account_sid: str
    available: list[dict[str, Any]] = field(default_factory=default_inventory)
    incoming: dict[str, dict[str, Any]] = field(default_factory=dict)  # PN... -> resource (in the account)
    released: list[dict[str, Any]] = field(default_factory=list)
    service_numbers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # MG -> PN -> resource
    calls: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)  # every numbers/calls request, in order
    scripts: deque[Script] = field(default_factory=deque)  # for IncomingPhoneNumbers creates

    def reset(self) -> None:
        self.available = default_inventory()
        for store in (self.incoming, self.service_numbers):
            store.clear()
        for log in (self.released, self.calls, self.requests):
            log.clear()
        self.scripts.clear()

    def incoming_resource(self, number: str, form: Form, origin: str = "twilio") -> dict[str, Any]:
        sid = "PN" + secrets.token_hex(16)
        stamp = rfc2822(datetime.now(UTC))
        capabilities = next(
            (a["capabilities"] for a in self.available if a["phone_number"] == number),
            {"voice": True, "SMS": True, "MMS": True, "fax": False},
        )
        resource: dict[str, Any] = {
            "sid": sid,
            "account_sid": self.account_sid,
            "phone_number": number,
            "friendly_name": number,
            "origin": origin,
            "status": "in-use",
            "api_version": API_VERSION,
            "address_requirements": "none",
            "beta": False,
            "capabilities": {key.lower(): value for key, value in capabilities.items()},
            "date_created": stamp,
            "date_updated": stamp,
            "emergency_status": "Inactive",
            "trunk_sid": None,
            "voice_application_sid": None,
            "sms_application_sid": None,
            "voice_caller_id_lookup": False,
            "voice_url": None,
            "voice_method": "POST",
            "voice_fallback_url": None,
            "voice_fallback_method": "POST",
            "status_callback": None,
            "status_callback_method": "POST",
            "sms_url": None,
            "sms_method": "POST",
            "sms_fallback_url": None,
            "sms_fallback_method": "POST",
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{sid}.json",
        }
        self.apply_update(resource, form)
        return resource

    @staticmethod
    def apply_update(resource: dict[str, Any], form: Form) -> None:
        for name in INCOMING_UPDATABLE:
            value = first(form, name)
            if value is not None:
                resource[_snake(name)] = value
        resource["date_updated"] = rfc2822(datetime.now(UTC))

    def add_existing(self, number: str, friendly_name: str | None = None, **urls: str) -> dict[str, Any]:
        """A number already in the account (bought elsewhere): what `POST /api/numbers/import` adopts."""
        form: Form = {"FriendlyName": [friendly_name or number]}
        form.update({name: [value] for name, value in urls.items()})
        resource = self.incoming_resource(number, form, origin="twilio")
        self.incoming[resource["sid"]] = resource
        return resource


INCOMING_PATH = "IncomingPhoneNumbers"
AVAILABLE_PATH = "AvailablePhoneNumbers"
SERVICES_PREFIX = "/v1/Services/"


def numbers_error(status: int, code: int, message: str | None = None) -> Response:
    return twilio_error(status, code, message or NUMBERS_ERRORS.get(code))


class NumbersApi:
    """Serves the numbers and calls resources for :class:`FakeTwilioApp` (``handle`` returns None for
    any other path)."""

    def __init__(self, state: NumbersState, app: FakeTwilioApp) -> None:
        self.state = state
        self.app = app

    async def handle(self, request: Request) -> Response | None:
        path = request.path
        if path.startswith("/_fake/numbers") or path in {"/_fake/calls", "/_fake/available"}:
            return self.control(request)
        if path.startswith(SERVICES_PREFIX):
            return self.service_numbers(request)
        if not path.startswith(MESSAGES_PREFIX) or not path.endswith(".json"):
            return None
        parts = path[len(MESSAGES_PREFIX) : -len(".json")].split("/")
        if len(parts) < 2 or parts[1] not in {INCOMING_PATH, AVAILABLE_PATH, "Calls"}:
            return None
        account_sid = parts[0]
        denied = self.app.authorize(request, account_sid)
        if denied is not None:
            return denied
        form = parse_qs(request.body.decode(errors="replace"), keep_blank_values=True)
        params = dict(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        self.state.requests.append(
            {"method": request.method, "path": path, "form": flatten_form(form), "query": params}
        )
        if parts[1] == AVAILABLE_PATH and len(parts) == 4 and parts[3] == "Local" and request.method == "GET":
            return self.search(path, parts[2], params)
        if parts[1] == "Calls" and len(parts) == 2 and request.method == "POST":
            return self.create_call(form)
        if parts[1] == INCOMING_PATH and len(parts) == 2:
            if request.method == "POST":
                return await self.buy(form)
            if request.method == "GET":
                return self.list_incoming(path, params)
        if parts[1] == INCOMING_PATH and len(parts) == 3:
            return self.one_incoming(request.method, parts[2], form, path)
        return twilio_error(405, 20004)

    # AvailablePhoneNumbers/{Country}/Local.json
    def search(self, path: str, country: str, params: Mapping[str, str]) -> Response:
        if country != "US":
            return Response(200, _twilio_page("available_phone_numbers", path, params, []))
        area = params.get("AreaCode")
        contains = (params.get("Contains") or "").replace("*", "")
        near = params.get("NearNumber")
        sms = params.get("SmsEnabled", "").lower() == "true"
        voice = params.get("VoiceEnabled", "").lower() == "true"
        found = [
            number
            for number in self.state.available
            if (not area or number["phone_number"][2:5] == area)
            and (not contains or contains in number["phone_number"])
            and (not near or number["phone_number"][2:5] == near.lstrip("+1")[:3])
            and (not sms or number["capabilities"]["SMS"])
            and (not voice or number["capabilities"]["voice"])
        ]
        return Response(200, _twilio_page("available_phone_numbers", path, params, found))

    # IncomingPhoneNumbers.json (POST: buy)
    async def buy(self, form: Form) -> Response:
        number = first(form, "PhoneNumber")
        if not number:
            return numbers_error(400, 21421, "A PhoneNumber or AreaCode is required")
        script = self.state.scripts.popleft() if self.state.scripts else {}
        delay = float(script.get("delay", 0))
        if "status" in script and not script.get("drop_after_create"):
            await asyncio.sleep(delay)
            return numbers_error(script["status"], script.get("code", 20500), script.get("message"))
        on_sale = next((n for n in self.state.available if n["phone_number"] == number), None)
        if on_sale is None:
            return numbers_error(400, 21422)
        resource = self.state.incoming_resource(number, form)
        self.state.available.remove(on_sale)
        self.state.incoming[resource["sid"]] = resource
        await asyncio.sleep(delay)
        if script.get("drop_after_create"):
            return numbers_error(script.get("status", 500), script.get("code", 20500), script.get("message"))
        return Response(201, resource)

    def list_incoming(self, path: str, params: Mapping[str, str]) -> Response:
        wanted_number = params.get("PhoneNumber")
        wanted_name = params.get("FriendlyName")
        found = [
            resource
            for resource in self.state.incoming.values()
            if (not wanted_number or resource["phone_number"] == wanted_number)
            and (not wanted_name or resource["friendly_name"] == wanted_name)
        ]
        return Response(200, _twilio_page("incoming_phone_numbers", path, params, found))

    def one_incoming(self, method: str, sid: str, form: Form, path: str) -> Response:
        resource = self.state.incoming.get(sid)
        if resource is None:
            return not_found(path)
        if method == "GET":
            return Response(200, resource)
        if method == "POST":
            self.state.apply_update(resource, form)
            return Response(200, resource)
        if method == "DELETE":
            self.state.released.append(self.state.incoming.pop(sid))
            for numbers in self.state.service_numbers.values():
                numbers.pop(sid, None)
            return Response(204, None)
        return twilio_error(405, 20004)

    # Calls.json
    def create_call(self, form: Form) -> Response:
        to, from_ = first(form, "To"), first(form, "From")
        if not to:
            return numbers_error(400, 21201)
        owned = {resource["phone_number"] for resource in self.state.incoming.values()}
        if not from_ or from_ not in owned:
            return numbers_error(400, 21212, f"The source phone number provided, {from_}, is not yet verified")
        if not (first(form, "Url") or first(form, "Twiml") or first(form, "ApplicationSid")):
            return numbers_error(400, 21205, "Url, Twiml or ApplicationSid is required")
        sid = "CA" + secrets.token_hex(16)
        stamp = rfc2822(datetime.now(UTC))
        call = {
            "sid": sid,
            "account_sid": self.state.account_sid,
            "to": to,
            "to_formatted": to,
            "from": from_,
            "from_formatted": from_,
            "status": "queued",
            "direction": "outbound-api",
            "api_version": API_VERSION,
            "date_created": stamp,
            "date_updated": stamp,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "parent_call_sid": None,
            "uri": f"/{API_VERSION}/Accounts/{self.state.account_sid}/Calls/{sid}.json",
            "twiml": first(form, "Twiml"),
            "url": first(form, "Url"),
            "status_callback": first(form, "StatusCallback"),
        }
        self.state.calls.append(call)
        return Response(201, call)

    # messaging.twilio.com /v1/Services/{MG}/PhoneNumbers[/{PN}]
    def service_numbers(self, request: Request) -> Response:
        if basic_credentials(request.headers) != (self.app.state.account_sid, self.app.state.auth_token):
            return unauthorized()
        parts = request.path[len(SERVICES_PREFIX) :].split("/")
        if len(parts) < 2 or parts[1] != "PhoneNumbers" or not parts[0].startswith("MG"):
            return not_found(request.path)
        service_sid = parts[0]
        numbers = self.state.service_numbers.setdefault(service_sid, {})
        form = parse_qs(request.body.decode(errors="replace"), keep_blank_values=True)
        self.state.requests.append({"method": request.method, "path": request.path, "form": flatten_form(form)})
        if len(parts) == 2 and request.method == "POST":
            sid = first(form, "PhoneNumberSid") or ""
            incoming = self.state.incoming.get(sid)
            if incoming is None:
                return numbers_error(400, 21421, f"PhoneNumberSid {sid} is not in this account")
            if any(sid in other for other in self.state.service_numbers.values()):
                return numbers_error(409, 21710)
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            numbers[sid] = {
                "sid": sid,
                "account_sid": self.state.account_sid,
                "service_sid": service_sid,
                "date_created": stamp,
                "date_updated": stamp,
                "phone_number": incoming["phone_number"],
                "country_code": "US",
                "capabilities": [name.upper() for name, on in incoming["capabilities"].items() if on],
                "url": f"https://messaging.twilio.com{SERVICES_PREFIX}{service_sid}/PhoneNumbers/{sid}",
            }
            return Response(201, numbers[sid])
        if len(parts) == 2 and request.method == "GET":
            items = list(numbers.values())
            return Response(200, {"phone_numbers": items, "meta": {"page": 0, "page_size": 50, "key": "phone_numbers"}})
        if len(parts) == 3 and request.method == "DELETE":
            if numbers.pop(parts[2], None) is None:
                return not_found(request.path)
            return Response(204, None)
        return twilio_error(405, 20004)

    def control(self, request: Request) -> Response:
        route = (request.method, request.path)
        if route == ("GET", "/_fake/numbers"):
            return Response(
                200,
                {
                    "incoming": list(self.state.incoming.values()),
                    "released": self.state.released,
                    "service_numbers": {mg: list(n.values()) for mg, n in self.state.service_numbers.items()},
                    "requests": self.state.requests,
                },
            )
        if route == ("GET", "/_fake/calls"):
            return Response(200, self.state.calls)
        if route == ("POST", "/_fake/available"):
            for number in json.loads(request.body or b"[]"):
                self.state.available.append(
                    available_number(**number) if isinstance(number, dict) else available_number(number)
                )
            return Response(200, {"available": len(self.state.available)})
        if route == ("POST", "/_fake/numbers/existing"):
            payload = json.loads(request.body or b"{}")
            return Response(200, self.state.add_existing(**payload))
        if route == ("POST", "/_fake/numbers/script"):
            responses = json.loads(request.body or b"{}").get("responses")
            if not isinstance(responses, list) or not all(
                isinstance(item, dict) and set(item) <= NUMBER_SCRIPT_KEYS for item in responses
            ):
                return Response(
                    400, {"error": f"responses: a list of objects with keys in {sorted(NUMBER_SCRIPT_KEYS)}"}
                )
            self.state.scripts.extend(responses)
            return Response(200, {"queued": len(responses)})
        return Response(404, {"error": f"no control endpoint {request.method} {request.path}"})


class FakeTwilioApp:
    """Raw ASGI app implementing the Messages API plus ``/_fake/`` control endpoints."""

    def __init__(self, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = DEFAULT_AUTH_TOKEN) -> None:
        self.state = TwilioState(account_sid, auth_token)
        self.outage: Script | None = None  # every Messages request (create, list, fetch) until healed
        self.numbers = NumbersState(account_sid)  # issue #15: numbers and calls (section above)
        self.numbers_api = NumbersApi(self.numbers, self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        received_at = time.time()
        if scope["type"] == "lifespan":
            await drain_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive, received_at)
        watcher = None
        if self.outage is not None and self.outage.get("drop_if_client_leaves"):
            gone = asyncio.Event()
            watcher = asyncio.create_task(_watch_disconnect(receive, gone))
            _CLIENT_GONE.set(gone)
        try:
            await send_json(send, await self.dispatch(request))
        finally:
            if watcher is not None:
                watcher.cancel()

    async def dispatch(self, request: Request) -> Response:
        if (answer := await self.numbers_api.handle(request)) is not None:
            return answer
        if request.path.startswith("/_fake/"):
            return self.control(request)
        if request.path.startswith(LOOKUP_PREFIX):
            return self.lookup(request)
        target = parse_messages_path(request.path)
        if target is None:
            return not_found(request.path)
        account_sid, message_sid = target
        if self.outage is not None:
            if "status" in self.outage:
                return await self.refuse(request, account_sid, message_sid, self.outage)
            await asyncio.sleep(float(self.outage.get("delay", 0)))
            if (gone := _CLIENT_GONE.get()) is not None and gone.is_set():
                return Response(499, {"error": "the client left before the request reached Twilio"})
        if message_sid is not None:
            return self.fetch(request, account_sid, message_sid)
        if request.method == "POST":
            return await self.create(request, account_sid)
        if request.method == "GET":
            return self.list_messages(request, account_sid)
        return twilio_error(405, 20004)

    def authorize(self, request: Request, account_sid: str) -> Response | None:
        if basic_credentials(request.headers) != (self.state.account_sid, self.state.auth_token):
            return unauthorized()
        if account_sid != self.state.account_sid:
            return not_found(request.path)
        return None

    async def create(self, request: Request, account_sid: str) -> Response:
        form = parse_qs(request.body.decode(errors="replace"), keep_blank_values=True)
        record = self.state.record(request.received_at, account_sid, form)
        response = self.authorize(request, account_sid) or validate_create(form)
        if response is None:
            response = await self.run_create(account_sid, form, record)
        record["status"] = response.status
        return response

    async def run_create(self, account_sid: str, form: Form, record: dict[str, Any]) -> Response:
        script = self.state.pop_script(first(form, "To")) or {}
        record["script"] = script or None
        delay = float(script.get("delay", 0))
        dropped = bool(script.get("drop_after_create"))
        if "status" in script and not dropped:
            await asyncio.sleep(delay)
            error = twilio_error(script["status"], script.get("code"), script.get("message"))
            if "retry_after" in script:
                error.headers = header_pairs([("retry-after", str(script["retry_after"]))])
            return error
        resource = self.state.create_message(account_sid, form)
        record["sid"] = resource["sid"]
        await asyncio.sleep(delay)
        if dropped:
            return twilio_error(script.get("status", 500), script.get("code"), script.get("message"))
        return Response(201, resource)

    async def refuse(self, request: Request, account_sid: str, message_sid: str | None, outage: Script) -> Response:
        """The outage's answer after its delay (a hang, when that outlasts the client's timeout). A create
        is recorded; with ``drop_after_create`` the text is created first and only the answer is lost."""
        record = None
        if request.method == "POST" and message_sid is None:
            form = parse_qs(request.body.decode(errors="replace"), keep_blank_values=True)
            record = self.state.record(request.received_at, account_sid, form)
            record["script"] = {"outage": outage}
            authentic = self.authorize(request, account_sid) is None and validate_create(form) is None
            if outage.get("drop_after_create") and authentic:
                record["sid"] = self.state.create_message(account_sid, form)["sid"]
        await asyncio.sleep(float(outage.get("delay", 0)))
        response = twilio_error(outage["status"], outage.get("code"), outage.get("message"))
        if outage.get("retry_after") is not None:
            response.headers = header_pairs([("retry-after", str(outage["retry_after"]))])
        if record is not None:
            record["status"] = response.status
        return response

    def list_messages(self, request: Request, account_sid: str) -> Response:
        denied = self.authorize(request, account_sid)
        if denied is not None:
            return denied
        params = dict(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        try:
            selected = self.state.select(account_sid, ListFilter.from_params(params))
            return Response(200, build_page(request.path, params, selected))
        except ValueError as exc:
            return twilio_error(400, 20001, f"Invalid filter or paging parameter: {exc}")

    def fetch(self, request: Request, account_sid: str, message_sid: str) -> Response:
        denied = self.authorize(request, account_sid)
        if denied is not None:
            return denied
        if request.method != "GET":
            return twilio_error(405, 20004)
        stored = self.state.messages.get(message_sid)
        if stored is None or stored.resource["account_sid"] != account_sid:
            return not_found(request.path)
        return Response(200, stored.resource)

    def lookup(self, request: Request) -> Response:
        if basic_credentials(request.headers) != (self.state.account_sid, self.state.auth_token):
            return unauthorized()
        if request.method != "GET":
            return twilio_error(405, 20004)
        number = request.path[len(LOOKUP_PREFIX) :]
        self.state.lookups.append(number)
        params = dict(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        resource = lookup_resource(number, self.state.line_types.get(number, DEFAULT_LINE_TYPE))
        if "line_type_intelligence" not in params.get("Fields", "").split(","):
            resource["line_type_intelligence"] = None
        return Response(200, resource)

    def control(self, request: Request) -> Response:
        route = (request.method, request.path)
        if route == ("GET", "/_fake/messages"):
            return Response(200, self.state.records)
        if route == ("GET", "/_fake/lookups"):
            return Response(200, self.state.lookups)
        if route == ("POST", "/_fake/line_types"):
            self.state.line_types.update(json.loads(request.body or b"{}"))
            return Response(200, {"ok": True})
        if route == ("POST", "/_fake/status"):
            change = json.loads(request.body or b"{}")
            resource = self.state.set_status(str(change.get("sid")), str(change.get("status")))
            return Response(200, resource) if resource else Response(404, {"error": "no such message"})
        if route == ("POST", "/_fake/reset"):
            self.state.reset()
            self.numbers.reset()
            self.outage = None
            return Response(200, {"ok": True})
        if route == ("POST", "/_fake/outage"):
            try:
                self.outage = validate_outage(json.loads(request.body or b"{}"))
            except ValueError as exc:
                return Response(400, {"error": str(exc)})
            return Response(200, {"ok": True})
        if route == ("DELETE", "/_fake/outage"):
            self.outage = None
            return Response(200, {"ok": True})
        if route == ("POST", "/_fake/script"):
            return self.add_script(request.body)
        return Response(404, {"error": f"no control endpoint {request.method} {request.path}"})

    def add_script(self, body: bytes) -> Response:
        try:
            payload = json.loads(body or b"{}")
            responses = validate_script(payload.get("responses"))
        except (ValueError, AttributeError) as exc:
            return Response(400, {"error": str(exc)})
        self.state.add_scripts(responses, payload.get("to"))
        return Response(200, {"queued": len(responses)})


# --------------------------------------------------------------------------- runner


class _ReadyServer(uvicorn.Server):
    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            print(f"READY {socket_url(sockets[0])}", flush=True)


def serve(host: str, port: int, account_sid: str, auth_token: str) -> None:
    sock = bind_socket(host, port)
    make_server(FakeTwilioApp(account_sid, auth_token), _ReadyServer).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Twilio Messages API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="no cyclic garbage collection (benchmarks: a pause here would be measured as the system's latency)",
    )
    args = parser.parse_args(argv)
    if args.no_gc:
        gc.disable()
    serve(args.host, args.port, args.account_sid, args.auth_token)


# --------------------------------------------------------------------------- pytest helper


def _read_ready_line(process: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout
    assert stdout is not None
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"fake twilio did not become ready within {timeout}s") from None
    if not line.startswith("READY "):
        raise RuntimeError(f"fake twilio failed to start (exit={process.poll()}): {line!r}")
    return line.split()[1]


class FakeTwilio:
    """Runs :mod:`tests.fakes.twilio_api` as a subprocess and drives its control API."""

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        port: int = 0,
        host: str = "127.0.0.1",
        startup_timeout: float = 15.0,
        collect_garbage: bool = True,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._port = port
        self._host = host
        self._startup_timeout = startup_timeout
        self._collect_garbage = collect_garbage
        self._process: subprocess.Popen[str] | None = None
        self._client: httpx.Client | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeTwilio is not started")
        return self._base_url

    @property
    def messages_url(self) -> str:
        """Absolute URL of the account's Messages list resource."""
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"

    def start(self) -> Self:
        if self._process is not None:
            return self
        self._process = subprocess.Popen(
            self._command(), cwd=PROJECT_ROOT, env=self._env(), stdout=subprocess.PIPE, text=True
        )
        try:
            self._base_url = _read_ready_line(self._process, self._startup_timeout)
        except RuntimeError:
            self.stop()
            raise
        self._client = httpx.Client(base_url=self._base_url, timeout=10.0, trust_env=False)
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._process is not None:
            self._terminate(self._process)
        self._process = self._client = self._base_url = None

    def messages(self) -> list[dict[str, Any]]:
        """Every create request received so far (including failed ones), in arrival order."""
        response = self._control().get("/_fake/messages")
        response.raise_for_status()
        return list(response.json())

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(records := self.messages()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} create requests, got {len(records)}")
            time.sleep(0.02)
        return records

    def script(self, responses: Sequence[Mapping[str, Any]], to: str | None = None) -> None:
        payload = {"responses": [dict(item) for item in responses], "to": to}
        self._control().post("/_fake/script", json=payload).raise_for_status()

    def reset(self) -> None:
        self._control().post("/_fake/reset").raise_for_status()

    def outage(self, **outage: Any) -> None:
        """Every Messages request answered this way until :meth:`heal`: ``status`` (and ``code``,
        ``message``, ``retry_after``) after ``delay`` seconds; ``drop_after_create`` creates the text
        first; no ``status`` is latency only, and with ``drop_if_client_leaves`` a request whose client
        disconnects during the delay is dropped unanswered and uncreated (it never reached Twilio).
        E.g. ``outage(status=429, retry_after=2)``."""
        self._control().post("/_fake/outage", json=outage).raise_for_status()

    def heal(self) -> None:
        self._control().delete("/_fake/outage").raise_for_status()

    def set_status(self, sid: str, status: str) -> dict[str, Any]:
        """Move a created text on (``sent``, ``delivered``, ...), as Twilio would; returns the resource."""
        response = self._control().post("/_fake/status", json={"sid": sid, "status": status})
        response.raise_for_status()
        return dict(response.json())

    def set_line_type(self, number: str, line_type: str) -> None:
        """What Lookup v2 answers for ``number`` (default ``mobile``)."""
        self._control().post("/_fake/line_types", json={number: line_type}).raise_for_status()

    def lookups(self) -> list[str]:
        """Every number looked up so far, in arrival order."""
        response = self._control().get("/_fake/lookups")
        response.raise_for_status()
        return list(response.json())

    # ------------------------------------------------------------------ numbers and calls (issue #15)

    def numbers_state(self) -> dict[str, Any]:
        """``incoming`` (the account's IncomingPhoneNumbers), ``released``, ``service_numbers`` (by
        Messaging Service SID) and ``requests`` (every numbers/calls request, in order)."""
        response = self._control().get("/_fake/numbers")
        response.raise_for_status()
        return dict(response.json())

    def incoming_numbers(self) -> list[dict[str, Any]]:
        return list(self.numbers_state()["incoming"])

    def add_available(self, *numbers: str | Mapping[str, Any]) -> None:
        """Put numbers on sale (a number, or keyword arguments of ``available_number``)."""
        payload = [dict(number) if isinstance(number, Mapping) else number for number in numbers]
        self._control().post("/_fake/available", json=payload).raise_for_status()

    def add_existing_number(self, number: str, friendly_name: str | None = None, **urls: str) -> dict[str, Any]:
        """A number already in the account (e.g. ``VoiceUrl="https://old.example/voice"``)."""
        response = self._control().post(
            "/_fake/numbers/existing", json={"number": number, "friendly_name": friendly_name, **urls}
        )
        response.raise_for_status()
        return dict(response.json())

    def script_numbers(self, responses: Sequence[Mapping[str, Any]]) -> None:
        """Answer the next IncomingPhoneNumbers creates so: ``{"status": 500, "drop_after_create": True}``
        buys the number and loses the answer."""
        payload = {"responses": [dict(item) for item in responses]}
        self._control().post("/_fake/numbers/script", json=payload).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        """Every call created through the Calls API, in order."""
        response = self._control().get("/_fake/calls")
        response.raise_for_status()
        return list(response.json())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _control(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("FakeTwilio is not started")
        return self._client

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.fakes.twilio_api",
            *("--host", self._host, "--port", str(self._port)),
            *("--account-sid", self.account_sid, "--auth-token", self.auth_token),
            *([] if self._collect_garbage else ["--no-gc"]),
        ]

    @staticmethod
    def _env() -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path}

    @staticmethod
    def _terminate(process: subprocess.Popen[str]) -> None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


if __name__ == "__main__":
    main()

"""Fake Twilio REST API (Messages resource, Lookup v2 line type) speaking Twilio's real wire format.

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


class FakeTwilioApp:
    """Raw ASGI app implementing the Messages API plus ``/_fake/`` control endpoints."""

    def __init__(self, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = DEFAULT_AUTH_TOKEN) -> None:
        self.state = TwilioState(account_sid, auth_token)
        self.outage: Script | None = None  # every Messages request (create, list, fetch) until healed

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

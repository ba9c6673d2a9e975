"""Fake Google (OAuth + Calendar API v3) speaking the real wire format (../shared/providers.md):

- OAuth: `GET /o/oauth2/v2/auth` consents at once (302 to `redirect_uri?code&state`, the scopes asked
  for, or those set with `grant_scopes`), `POST /token` (`authorization_code` → access + refresh token;
  `refresh_token` → a new access token, or 400 `invalid_grant` once revoked), `POST /revoke`;
- `GET /calendar/v3/calendars/{id}/events`: `singleEvents` instances, `timeMin`/`timeMax` on a full list,
  `pageToken` pages (`page_size`; `empty_first_page` answers an empty page that still has a
  `nextPageToken`), `nextSyncToken` on the last page only, `syncToken` lists every change since (cancelled
  rows included, as Google does), 410 `fullSyncRequired` for a token older than `invalidate_sync_tokens`;
- `POST …/events` (a client-chosen `id`; 409 `duplicate` when it exists, deleted or not), `PATCH` and
  `DELETE …/events/{id}` (404 unknown, 410 deleted already), `POST …/events/watch` (a channel; the `sync`
  message, then `exists` after each change, POSTed to its address with the `X-Goog-*` headers),
  `POST /calendar/v3/channels/stop` (404 unknown), `POST /calendar/v3/freeBusy`;
- every API request needs a live access token (401 `authError` otherwise);
- failure injection per operation: `fail("events.list", 429)`, `fail("freebusy", delay=5)` (a timeout for
  any client with a shorter one), `fail("token", 400, reason="invalid_grant")`, 403 `rateLimitExceeded`,
  500 … for the next `times` requests.

In-process (a uvicorn thread): tests arrange and inspect the state directly; the real processes of the
e2e tests reach it over HTTP. `python -m tests.fakes.google --port N` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx

from tests.fakes._asgi import Receive, Request, Response, Scope, Send, ThreadedServer, read_request, send_json

SCOPE_PREFIX = "https://www.googleapis.com/auth/"
DEFAULT_SCOPES = f"{SCOPE_PREFIX}calendar.events.owned {SCOPE_PREFIX}calendar.freebusy"
MAX_TTL_SECONDS = 7 * 86400
BASE32HEX = "0123456789abcdefghijklmnopqrstuv"


def google_error(status: int, reason: str, message: str = "") -> Response:
    domain = "usageLimits" if "Limit" in reason or reason == "quotaExceeded" else "global"
    return Response(
        status,
        {"error": {"code": status, "message": message or reason,
                   "errors": [{"domain": domain, "reason": reason, "message": message or reason}]}},
    )  # fmt: skip


def oauth_error(error: str, description: str = "") -> Response:
    return Response(400, {"error": error, "error_description": description or error})


def new_event_id() -> str:
    return "".join(secrets.choice(BASE32HEX) for _ in range(26))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _instant(value: dict[str, Any]) -> datetime | None:
    if value.get("dateTime"):
        return datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00")).astimezone(UTC)
    if value.get("date"):
        return datetime.combine(date.fromisoformat(value["date"]), datetime.min.time(), tzinfo=UTC)
    return None


@dataclass
class Channel:
    id: str
    token: str | None
    address: str
    calendar_id: str
    resource_id: str
    expiration_ms: int
    message_number: int = 0


@dataclass
class Calendar:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → the resource (with "_seq")
    hidden: set[str] = field(default_factory=set)  # instances of a series cancelled as "parent only"
    min_valid_seq: int = 0  # sync tokens older than this are 410


@dataclass
class Failure:
    status: int | None
    reason: str | None
    delay: float
    times: int


class FakeGoogleState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.calendars: dict[str, Calendar] = {}
            self.seq = itertools.count(1)
            self.codes: dict[str, dict[str, Any]] = {}
            self.refresh_tokens: dict[str, dict[str, Any]] = {}
            self.access_tokens: dict[str, dict[str, Any]] = {}
            self.channels: dict[str, Channel] = {}
            self.failures: dict[str, list[Failure]] = {}
            self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
            self.page_size = 2500
            self.empty_first_page = False
            self.grant_scopes: str | None = None
            self.send_refresh_token = True
            self.access_ttl = 3600
            self.max_ttl = MAX_TTL_SECONDS
            self.push_enabled = True
            self.notifications: list[dict[str, str]] = []

    def calendar(self, calendar_id: str) -> Calendar:
        return self.calendars.setdefault(calendar_id, Calendar())

    def next_seq(self) -> int:
        return next(self.seq)


class Notifier(threading.Thread):
    """POSTs push notifications in order, like Google: an empty body and the `X-Goog-*` headers."""

    def __init__(self, state: FakeGoogleState) -> None:
        super().__init__(name="fake-google-push", daemon=True)
        self.state = state
        self.queue: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()

    def run(self) -> None:
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while (item := self.queue.get()) is not None:
                address, headers = item
                try:
                    response = client.post(address, headers=headers, content=b"")
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self.state.lock:
                    self.state.notifications.append({**headers, "status": str(status)})


class FakeGoogleApp:
    def __init__(self, state: FakeGoogleState, notifier: Notifier) -> None:
        self.state = state
        self.notifier = notifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive, time.monotonic())
        query = parse_qs(request.query_string.decode(), keep_blank_values=True)
        operation, handler = self.route(request)
        body = self._body(request)
        with self.state.lock:
            self.state.requests.append((request.method, request.path, query, body))
        failure = self._failure(operation)
        if failure is not None:
            if failure.delay:
                await asyncio.sleep(failure.delay)
            if failure.status:
                answer = (
                    oauth_error(failure.reason or "invalid_grant")
                    if operation == "token" and failure.status == 400
                    else google_error(failure.status, failure.reason or _default_reason(failure.status))
                )
                await send_json(send, answer)
                return
        if handler is None:
            await send_json(send, google_error(404, "notFound", f"no route {request.method} {request.path}"))
            return
        answer = handler(request, query, body)
        if answer.status == 302:
            location = answer.payload
            await send({"type": "http.response.start", "status": 302, "headers": [(b"location", location.encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        if answer.status == 204:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_json(send, answer)

    @staticmethod
    def _body(request: Request) -> Any:
        content_type = request.headers.get(b"content-type", b"").decode()
        if not request.body:
            return None
        if "json" in content_type:
            return json.loads(request.body)
        return {k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()}

    def _failure(self, operation: str) -> Failure | None:
        with self.state.lock:
            for key in (operation, "*"):
                pending = self.state.failures.get(key)
                if pending:
                    failure = pending[0]
                    failure.times -= 1
                    if failure.times <= 0:
                        pending.pop(0)
                    return failure
        return None

    # ------------------------------------------------------------------------ routing
    def route(self, request: Request) -> tuple[str, Any]:
        method, path = request.method, request.path
        if method == "GET" and path == "/o/oauth2/v2/auth":
            return "authorize", self.authorize
        if method == "POST" and path == "/token":
            return "token", self.token
        if method == "POST" and path == "/revoke":
            return "revoke", self.revoke
        if method == "POST" and path == "/calendar/v3/freeBusy":
            return "freebusy", self.authed(self.freebusy)
        if method == "POST" and path == "/calendar/v3/channels/stop":
            return "channels.stop", self.authed(self.stop)
        prefix = "/calendar/v3/calendars/"
        if path.startswith(prefix):
            rest = path[len(prefix) :].split("/")
            calendar_id = _unquote(rest[0])
            if rest[1:] == ["events"] and method == "GET":
                return "events.list", self.authed(lambda r, q, b: self.list_events(calendar_id, q))
            if rest[1:] == ["events"] and method == "POST":
                return "events.insert", self.authed(lambda r, q, b: self.insert(calendar_id, b))
            if rest[1:] == ["events", "watch"] and method == "POST":
                return "events.watch", self.authed(lambda r, q, b: self.watch(calendar_id, b))
            if len(rest) == 3 and rest[1] == "events":
                event_id = _unquote(rest[2])
                if method == "PATCH":
                    return "events.patch", self.authed(lambda r, q, b: self.patch(calendar_id, event_id, b))
                if method == "DELETE":
                    return "events.delete", self.authed(lambda r, q, b: self.delete(calendar_id, event_id))
                if method == "GET":
                    return "events.get", self.authed(lambda r, q, b: self.get(calendar_id, event_id))
        return "unknown", None

    def authed(self, handler: Any) -> Any:
        def check(request: Request, query: dict[str, list[str]], body: Any) -> Response:
            header = request.headers.get(b"authorization", b"").decode()
            token = header.removeprefix("Bearer ").strip()
            with self.state.lock:
                access = self.state.access_tokens.get(token)
                refresh = self.state.refresh_tokens.get(access["refresh_token"]) if access else None
                if access is None or access["expires_at"] < time.time() or (refresh and refresh["revoked"]):
                    return google_error(401, "authError", "Invalid Credentials")
                return handler(request, query, body)

        return check

    # ------------------------------------------------------------------------ OAuth
    def authorize(self, request: Request, query: dict[str, list[str]], body: Any) -> Response:
        redirect_uri = query.get("redirect_uri", [""])[0]
        state = query.get("state", [""])[0]
        code = secrets.token_urlsafe(16)
        with self.state.lock:
            scopes = self.state.grant_scopes if self.state.grant_scopes is not None else query.get("scope", [""])[0]
            self.state.codes[code] = {"scopes": scopes, "redirect_uri": redirect_uri,
                                      "client_id": query.get("client_id", [""])[0]}  # fmt: skip
        return Response(302, f"{redirect_uri}?{urlencode({'code': code, 'state': state})}")

    def issue_code(self, scopes: str = DEFAULT_SCOPES, redirect_uri: str = "") -> str:
        code = secrets.token_urlsafe(16)
        with self.state.lock:
            self.state.codes[code] = {"scopes": scopes, "redirect_uri": redirect_uri, "client_id": ""}
        return code

    def _access_token(self, refresh_token: str, scopes: str) -> dict[str, Any]:
        access = "ya29." + secrets.token_urlsafe(24)
        self.state.access_tokens[access] = {
            "refresh_token": refresh_token,
            "expires_at": time.time() + self.state.access_ttl,
        }
        return {"access_token": access, "expires_in": self.state.access_ttl, "token_type": "Bearer", "scope": scopes}

    def token(self, request: Request, query: dict[str, list[str]], body: Any) -> Response:
        form = body or {}
        with self.state.lock:
            if form.get("grant_type") == "authorization_code":
                grant = self.state.codes.pop(form.get("code", ""), None)
                if grant is None:
                    return oauth_error("invalid_grant", "Malformed auth code.")
                if grant["redirect_uri"] and grant["redirect_uri"] != form.get("redirect_uri"):
                    return oauth_error("redirect_uri_mismatch", "Bad Request")
                refresh = "1//" + secrets.token_urlsafe(24)
                self.state.refresh_tokens[refresh] = {"revoked": False, "scopes": grant["scopes"]}
                answer = self._access_token(refresh, grant["scopes"])
                if self.state.send_refresh_token:
                    answer["refresh_token"] = refresh
                return Response(200, answer)
            if form.get("grant_type") == "refresh_token":
                refresh_token = form.get("refresh_token", "")
                known = self.state.refresh_tokens.get(refresh_token)
                if known is None or known["revoked"]:
                    return oauth_error("invalid_grant", "Token has been expired or revoked.")
                return Response(200, self._access_token(refresh_token, known["scopes"]))
        return oauth_error("unsupported_grant_type", "Invalid grant_type")

    def revoke(self, request: Request, query: dict[str, list[str]], body: Any) -> Response:
        token = (body or {}).get("token") or query.get("token", [""])[0]
        with self.state.lock:
            if token in self.state.refresh_tokens:
                self.state.refresh_tokens[token]["revoked"] = True
                return Response(200, {})
            access = self.state.access_tokens.get(token)
            if access is not None:
                self.state.refresh_tokens[access["refresh_token"]]["revoked"] = True
                return Response(200, {})
        return oauth_error("invalid_token", "Token expired or revoked")

    # ------------------------------------------------------------------------ events
    def _visible(self, calendar: Calendar, event: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in event.items() if not k.startswith("_")}
        if shown.get("status") == "cancelled":
            keep = {"kind", "etag", "id", "status", "recurringEventId", "originalStartTime", "updated"}
            shown = {k: v for k, v in shown.items() if k in keep}
        return shown

    def list_events(self, calendar_id: str, query: dict[str, list[str]]) -> Response:
        params = {k: v[0] for k, v in query.items()}
        with self.state.lock:
            calendar = self.state.calendar(calendar_id)
            sync_token = params.get("syncToken")
            if sync_token is not None:
                if any(k in params for k in ("timeMin", "timeMax", "updatedMin", "q", "orderBy", "iCalUID")):
                    return google_error(400, "invalid", "syncToken cannot be used with these parameters")
                since = int(sync_token.removeprefix("st"))
                if since < calendar.min_valid_seq:
                    return google_error(
                        410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required."
                    )
                rows = [e for e in calendar.events.values() if e["_seq"] > since and e["id"] not in calendar.hidden]
            else:
                lower = _parse(params.get("timeMin"))
                upper = _parse(params.get("timeMax"))
                show_deleted = params.get("showDeleted") == "true"
                rows = [
                    e for e in calendar.events.values()
                    if (show_deleted or e.get("status") != "cancelled") and e["id"] not in calendar.hidden
                    and _overlaps(e, lower, upper)
                ]  # fmt: skip
            rows.sort(key=lambda e: (e["_seq"], e["id"]))
            size = min(int(params.get("maxResults", "250")), self.state.page_size)
            offset = int(params["pageToken"].removeprefix("p")) if params.get("pageToken") else 0
            empty = self.state.empty_first_page and offset == 0 and "pageToken" not in params and rows
            page = [] if empty else rows[offset : offset + size]
            next_offset = 0 if empty else offset + size
            answer: dict[str, Any] = {"kind": "calendar#events", "items": [self._visible(calendar, e) for e in page]}
            if next_offset < len(rows):
                answer["nextPageToken"] = f"p{next_offset}"
            else:
                current = max((e["_seq"] for e in calendar.events.values()), default=0)
                answer["nextSyncToken"] = f"st{max(current, self._last_seq())}"
            return Response(200, answer)

    def _last_seq(self) -> int:
        return max((e["_seq"] for c in self.state.calendars.values() for e in c.events.values()), default=0)

    def get(self, calendar_id: str, event_id: str) -> Response:
        with self.state.lock:
            event = self.state.calendar(calendar_id).events.get(event_id)
            if event is None:
                return google_error(404, "notFound", "Not Found")
            return Response(200, self._visible(self.state.calendar(calendar_id), event))

    def insert(self, calendar_id: str, body: dict[str, Any]) -> Response:
        with self.state.lock:
            calendar = self.state.calendar(calendar_id)
            event_id = body.get("id") or new_event_id()
            if event_id in calendar.events:
                return google_error(409, "duplicate", "The requested identifier already exists.")
            event = {**body, "id": event_id, "status": body.get("status", "confirmed"), "kind": "calendar#event"}
            self._store(calendar_id, event)
            return Response(200, self._visible(calendar, event))

    def patch(self, calendar_id: str, event_id: str, body: dict[str, Any]) -> Response:
        with self.state.lock:
            calendar = self.state.calendar(calendar_id)
            event = calendar.events.get(event_id)
            if event is None:
                return google_error(404, "notFound", "Not Found")
            merged = {**event, **body, "id": event_id}
            self._store(calendar_id, merged)
            return Response(200, self._visible(calendar, merged))

    def delete(self, calendar_id: str, event_id: str) -> Response:
        with self.state.lock:
            calendar = self.state.calendar(calendar_id)
            event = calendar.events.get(event_id)
            if event is None:
                return google_error(404, "notFound", "Not Found")
            if event.get("status") == "cancelled":
                return google_error(410, "deleted", "Resource has been deleted")
            self._store(calendar_id, {**event, "status": "cancelled"})
            return Response(204, None)

    def _store(self, calendar_id: str, event: dict[str, Any]) -> None:
        calendar = self.state.calendar(calendar_id)
        event["_seq"] = self.state.next_seq()
        event["updated"] = rfc3339(datetime.now(UTC))
        calendar.events[event["id"]] = event
        self._notify(calendar_id)

    # ------------------------------------------------------------------------ push
    def watch(self, calendar_id: str, body: dict[str, Any]) -> Response:
        with self.state.lock:
            channel_id = str(body.get("id", ""))
            if not channel_id or len(channel_id) > 64 or channel_id in self.state.channels:
                return google_error(400, "channelIdInvalid" if channel_id else "required", "Invalid channel id")
            ttl = int((body.get("params") or {}).get("ttl", MAX_TTL_SECONDS))
            expiration = int((time.time() + min(ttl, self.state.max_ttl)) * 1000)
            channel = Channel(
                id=channel_id,
                token=body.get("token"),
                address=str(body.get("address")),
                calendar_id=calendar_id,
                resource_id="r" + secrets.token_hex(8),
                expiration_ms=expiration,
            )
            self.state.channels[channel_id] = channel
            self._push(channel, "sync")
            return Response(
                200,
                {
                    "kind": "api#channel",
                    "id": channel_id,
                    "resourceId": channel.resource_id,
                    "resourceUri": f"https://www.googleapis.com/calendar/v3/calendars/{calendar_id}/events",
                    "token": channel.token,
                    "expiration": str(expiration),
                },
            )

    def stop(self, request: Request, query: dict[str, list[str]], body: Any) -> Response:
        with self.state.lock:
            channel = self.state.channels.get(str((body or {}).get("id")))
            if channel is None or channel.resource_id != (body or {}).get("resourceId"):
                return google_error(404, "notFound", "Channel not found")
            del self.state.channels[channel.id]
        return Response(204, None)

    def _notify(self, calendar_id: str) -> None:
        if not self.state.push_enabled:
            return
        for channel in list(self.state.channels.values()):
            if channel.calendar_id == calendar_id and channel.expiration_ms > time.time() * 1000:
                self._push(channel, "exists")

    def _push(self, channel: Channel, state: str) -> None:
        channel.message_number += 1
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Message-Number": str(channel.message_number),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": state,
            "X-Goog-Resource-URI": f"https://www.googleapis.com/calendar/v3/calendars/{channel.calendar_id}/events",
            "X-Goog-Channel-Expiration": datetime.fromtimestamp(channel.expiration_ms / 1000, UTC).strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            ),
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
        }
        if channel.token:
            headers["X-Goog-Channel-Token"] = channel.token
        self.notifier.queue.put((channel.address, headers))

    # ------------------------------------------------------------------------ freeBusy
    def freebusy(self, request: Request, query: dict[str, list[str]], body: Any) -> Response:
        lower, upper = _parse(body.get("timeMin")), _parse(body.get("timeMax"))
        calendars: dict[str, Any] = {}
        with self.state.lock:
            for item in body.get("items") or []:
                calendar_id = item.get("id")
                if calendar_id not in self.state.calendars:
                    calendars[calendar_id] = {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}
                    continue
                spans = []
                for event in self.state.calendars[calendar_id].events.values():
                    if event.get("status") == "cancelled" or event.get("transparency") == "transparent":
                        continue
                    if event["id"] in self.state.calendars[calendar_id].hidden:
                        continue
                    start, end = _instant(event.get("start") or {}), _instant(event.get("end") or {})
                    if start and end and (upper is None or start < upper) and (lower is None or end > lower):
                        spans.append((max(start, lower) if lower else start, min(end, upper) if upper else end))
                calendars[calendar_id] = {"busy": [{"start": rfc3339(s), "end": rfc3339(e)} for s, e in _merge(spans)]}
        return Response(200, {"kind": "calendar#freeBusy", "timeMin": body.get("timeMin"),
                              "timeMax": body.get("timeMax"), "calendars": calendars})  # fmt: skip


def _default_reason(status: int) -> str:
    return {401: "authError", 403: "rateLimitExceeded", 404: "notFound", 410: "fullSyncRequired",
            429: "rateLimitExceeded"}.get(status, "backendError")  # fmt: skip


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _overlaps(event: dict[str, Any], lower: datetime | None, upper: datetime | None) -> bool:
    start, end = _instant(event.get("start") or {}), _instant(event.get("end") or {})
    if start is None or end is None:
        return True
    return (upper is None or start < upper) and (lower is None or end > lower)


def _merge(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class FakeGoogle:
    """The fake server in a thread, and what tests do with it."""

    def __init__(self, port: int = 0) -> None:
        self.state = FakeGoogleState()
        self.notifier = Notifier(self.state)
        self.app = FakeGoogleApp(self.state, self.notifier)
        self.server = ThreadedServer(self.app, port=port)
        self.base_url = self.server.url

    def start(self) -> FakeGoogle:
        self.notifier.start()
        self.server.start()
        return self

    def stop(self) -> None:
        self.notifier.queue.put(None)
        self.server.stop()

    def __enter__(self) -> FakeGoogle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def settings(self) -> dict[str, str]:
        """Settings that point an `nmc` process at this fake."""
        return {
            "GOOGLE_API_BASE_URL": self.base_url,
            "GOOGLE_OAUTH_BASE_URL": self.base_url,
            "GOOGLE_TOKEN_BASE_URL": self.base_url,
            "GOOGLE_CLIENT_ID": "fake-client-id.apps.googleusercontent.com",
            "GOOGLE_CLIENT_SECRET": "fake-client-secret",
        }

    def reset(self) -> None:
        self.state.reset()

    def issue_code(self, scopes: str = DEFAULT_SCOPES) -> str:
        """An authorization code as if the owner had consented (for a callback built by hand)."""
        return self.app.issue_code(scopes)

    # ------------------------------------------------------------------------ arranging
    def add_event(
        self,
        calendar_id: str = "primary",
        *,
        start: datetime | date,
        end: datetime | date,
        summary: str = "Busy",
        event_id: str | None = None,
        **fields: Any,
    ) -> str:
        event_id = event_id or new_event_id()
        event = {
            "kind": "calendar#event",
            "id": event_id,
            "status": "confirmed",
            "summary": summary,
            "start": _when(start),
            "end": _when(end),
            **fields,
        }
        with self.state.lock:
            self.app._store(calendar_id, event)
        return event_id

    def add_recurring(
        self,
        calendar_id: str = "primary",
        *,
        first_start: datetime,
        duration: timedelta,
        count: int,
        every: timedelta = timedelta(days=1),
        summary: str = "Standing job",
    ) -> tuple[str, list[str]]:
        """A series as `singleEvents=true` lists it: one instance per occurrence (`<id>_<start>`)."""
        base = new_event_id()
        ids = []
        for n in range(count):
            start = first_start + n * every
            instance_id = f"{base}_{start.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"
            self.add_event(
                calendar_id,
                start=start,
                end=start + duration,
                summary=summary,
                event_id=instance_id,
                recurringEventId=base,
                originalStartTime={"dateTime": rfc3339(start)},
            )
            ids.append(instance_id)
        return base, ids

    def update_event(self, calendar_id: str, event_id: str, **fields: Any) -> None:
        with self.state.lock:
            event = dict(self.state.calendar(calendar_id).events[event_id])
            for key in ("start", "end"):
                if key in fields and isinstance(fields[key], datetime | date):
                    fields[key] = _when(fields[key])
            event.update(fields)
            self.app._store(calendar_id, event)

    def cancel_event(self, calendar_id: str, event_id: str) -> None:
        self.update_event(calendar_id, event_id, status="cancelled")

    def cancel_series(self, calendar_id: str, base_id: str, *, parent_only: bool) -> None:
        """Delete a whole series: Google may answer the parent id only, or each instance (both readings)."""
        with self.state.lock:
            calendar = self.state.calendar(calendar_id)
            instances = [i for i, e in calendar.events.items() if e.get("recurringEventId") == base_id]
            if parent_only:
                calendar.hidden.update(instances)
                self.app._store(calendar_id, {"kind": "calendar#event", "id": base_id, "status": "cancelled"})
            else:
                for instance in instances:
                    self.app._store(calendar_id, {**calendar.events[instance], "status": "cancelled"})

    def events(self, calendar_id: str = "primary", *, include_cancelled: bool = False) -> list[dict[str, Any]]:
        with self.state.lock:
            rows = list(self.state.calendar(calendar_id).events.values())
        return [dict(e) for e in rows if include_cancelled or e.get("status") != "cancelled"]

    def invalidate_sync_tokens(self, calendar_id: str = "primary") -> None:
        with self.state.lock:
            self.state.calendar(calendar_id).min_valid_seq = self._seq_now() + 1

    def _seq_now(self) -> int:
        return self.app._last_seq()

    def fail(
        self,
        operation: str,
        status: int | None = None,
        *,
        reason: str | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """The next `times` requests of `operation` (e.g. `events.list`, `token`, `freebusy`, or `*`) fail."""
        with self.state.lock:
            self.state.failures.setdefault(operation, []).append(Failure(status, reason, delay, times))

    def heal(self) -> None:
        with self.state.lock:
            self.state.failures.clear()

    def revoke_all(self) -> None:
        """The owner removed our access at Google: every refresh token is dead (`invalid_grant`)."""
        with self.state.lock:
            for known in self.state.refresh_tokens.values():
                known["revoked"] = True

    def expire_access_tokens(self) -> None:
        with self.state.lock:
            for access in self.state.access_tokens.values():
                access["expires_at"] = 0

    def requests_to(self, operation_path_fragment: str, method: str | None = None) -> list[tuple[str, str, Any, Any]]:
        with self.state.lock:
            return [
                r for r in self.state.requests if operation_path_fragment in r[1] and (method is None or r[0] == method)
            ]

    def channels(self) -> list[Channel]:
        with self.state.lock:
            return list(self.state.channels.values())

    def notifications(self) -> list[dict[str, str]]:
        with self.state.lock:
            return list(self.state.notifications)


def _when(value: datetime | date) -> dict[str, str]:
    if isinstance(value, datetime):
        return {"dateTime": value.isoformat()}
    return {"date": value.isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Google OAuth + Calendar API")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with FakeGoogle(port=args.port) as fake:
        print(f"READY {fake.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

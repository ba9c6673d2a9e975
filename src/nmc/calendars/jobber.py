"""Jobber as a calendar provider: OAuth with rotating refresh tokens, GraphQL (the pinned
`X-JOBBER-GRAPHQL-VERSION`), small cursor pages, the query-cost bucket respected, visits read as busy
time, and bookings written back as a request with an assessment.

Wire facts are in ../shared/providers.md ("Jobber"); the operations' exact shapes that providers.md does
not give are the ones in the shared contract with the fake (`tests/fakes/jobber.py`) and are marked
"unconfirmed" below. What differs from Google, and why (ADR 0016):

- No "changed since" filter: every sync re-pulls the rolling window; the module replaces the mapped
  resources' blocks with what came back, so a visit moved, deleted, completed or cancelled frees its
  old time. The "cursor" is a marker that the window was pulled once (`WINDOW_CURSOR`).
- A Jobber token speaks for one account; `calendar_id` is that account's id for a sync, and for a
  write-back the Jobber user the request is assigned to. Webhooks are app-wide: `watch`/`stop` do nothing.
- Each visit's `Change` carries its assigned users (`owners`): the module maps them to resources.
- Query cost: every answer's `extensions.cost.throttleStatus` is remembered per account; before a
  request that would overdraw the bucket we wait (needed - available) / restoreRate, at most
  `THROTTLE_WAIT_CAP_SECONDS`; a longer wait raises `RateLimited(reason="throttled")` so the job is
  requeued with that delay instead of holding a jobs slot (one busy account never starves the others).

Every request is counted in `provider_requests_total{provider="jobber"}`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time as clock
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import structlog

from nmc.calendars.http import REQUEST_TIMEOUT_SECONDS, provider_client
from nmc.calendars.provider import (
    AuthRevoked,
    BookingEvent,
    Change,
    Grant,
    RateLimited,
    Refused,
    SyncResult,
    Unavailable,
    Window,
)
from nmc.observability.providers import Timer, failure_outcome, observe_request, status_outcome
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="calendars")

PAGE_SIZE = 40  # a Visits page costs about first x fields: small pages keep each request cheap
THROTTLE_WAIT_CAP_SECONDS = 10.0  # past this, the job is requeued with the delay instead of waiting
THROTTLED_RETRIES = 3
DEFAULT_COST = 1000.0  # an operation's cost before its first answer tells us
WINDOW_CURSOR = "window"  # Jobber has no sync token: a sync after the first one re-pulls the window
FREE_STATUSES = frozenset({"COMPLETED", "CANCELLED", "UNSCHEDULED"})
MARKER_PREFIX = "[nmc:"
THROTTLED = "throttled"

# `assignedUsers(first: 10)`: without `first` a connection is costed at 100 per visit; job and client are
# not read (each scalar costs). Unconfirmed against Jobber's schema (the contract with the fake).
ASSIGNED_USERS_PER_VISIT = 10
_VISIT_FIELDS = (
    "id title startAt endAt allDay completedAt visitStatus "
    f"assignedUsers(first: {ASSIGNED_USERS_PER_VISIT}){{ nodes{{ id }} }}"
)
# The operations (shapes beyond providers.md are unconfirmed: the shared contract with the fake).
ACCOUNT = "query Account { account { id name } }"
USERS = """query Users($first:Int!,$after:String){ users(first:$first, after:$after){
  nodes{ id name{ full } email{ raw } } pageInfo{ hasNextPage endCursor } } }"""
VISITS = f"""query Visits($first:Int!,$after:String,$from:ISO8601DateTime!,$to:ISO8601DateTime!,$timezone:String){{
  visits(first:$first, after:$after, filter:{{startAt:{{after:$from, before:$to}}}}, timezone:$timezone){{
    nodes{{ {_VISIT_FIELDS} }} pageInfo{{ hasNextPage endCursor }} }} }}"""
VISIT = f"query Visit($id:EncodedId!){{ visit(id:$id){{ {_VISIT_FIELDS} }} }}"
CLIENTS_BY_PHONE = """query ClientsByPhone($term:String!){ clients(first:5, searchTerm:$term){
  nodes{ id phones{ number } } } }"""
CLIENT_CREATE = """mutation ClientCreate($input:ClientCreateInput!){ clientCreate(input:$input){
  client{ id } userErrors{ message path } } }"""
REQUEST_CREATE = """mutation RequestCreate($input:RequestCreateInput!){ requestCreate(input:$input){
  request{ id title assessment{ id startAt endAt } } userErrors{ message path } } }"""
REQUESTS_BY_TERM = """query RequestsByTerm($term:String!){ requests(first:5, searchTerm:$term){
  nodes{ id title assessment{ id startAt endAt } } } }"""
REQUEST_CREATE_NOTE = """mutation RequestCreateNote($requestId:EncodedId!,$input:RequestCreateNoteInput!){
  requestCreateNote(requestId:$requestId, input:$input){ requestNote{ id } userErrors{ message path } } }"""
ASSESSMENT_EDIT_SCHEDULE = """mutation AssessmentEditSchedule(
  $assessmentId:EncodedId!,$input:AssessmentEditScheduleInput!){
  assessmentEditSchedule(assessmentId:$assessmentId, input:$input){ assessment{ id startAt endAt }
  userErrors{ message path } } }"""
REQUEST_ARCHIVE = """mutation RequestArchive($requestId:EncodedId!){ requestArchive(requestId:$requestId){
  request{ id } userErrors{ message path } } }"""


# ---------------------------------------------------------------------------- visits → changes
def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value)
    if len(text) == 10:  # a bare date
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def all_day_days(start_at: Any, end_at: Any, zone: ZoneInfo) -> tuple[date, date] | None:
    """An all-day visit's local days [first, after last) in the tenant's zone. Bare dates are the days
    themselves (the end included). Instants are the account's local day(s), 00:00 to 23:59:59 or to the
    next midnight, in whatever offset the answer uses (the Visit query has no `timezone`): the first day is
    the one at the first day's middle, and the length is the span rounded to whole days, so an account
    zone a few hours off the tenant's, or a 23- or 25-hour day, still blocks the same days."""
    if start_at and len(str(start_at)) == 10:
        first = date.fromisoformat(str(start_at))
        last = date.fromisoformat(str(end_at)) if end_at and len(str(end_at)) == 10 else first
        return first, max(first, last) + timedelta(days=1)
    start, end = _moment(start_at), _moment(end_at)
    if start is None:
        return None
    length = max(1, round(((end or start) - start).total_seconds() / 86400))
    first = (start + timedelta(hours=12)).astimezone(zone).date()
    return first, first + timedelta(days=length)


def visit_change(node: Mapping[str, Any], zone: ZoneInfo) -> Change | None:
    """The busy-time rules for a visit: scheduled and not completed/cancelled → busy for its assigned
    users (the module maps them to resources); unscheduled, completed or cancelled → free. An all-day
    visit blocks its local days in the tenant's zone, whole (an end at local midnight is exclusive)."""
    visit_id = node.get("id")
    if not visit_id:
        return None
    visit_id = str(visit_id)
    owners = tuple(str(u["id"]) for u in ((node.get("assignedUsers") or {}).get("nodes") or ()) if u.get("id"))
    status = str(node.get("visitStatus") or "").upper()
    if status in FREE_STATUSES or node.get("completedAt") or not node.get("startAt"):
        return Change(visit_id, busy=False, owners=owners)
    if node.get("allDay"):
        days = all_day_days(node.get("startAt"), node.get("endAt"), zone)
        if days is None:
            return Change(visit_id, busy=False, owners=owners)
        start, end = _midnight(days[0], zone), _midnight(days[1], zone)
    else:
        start_or_none, end_or_none = _moment(node.get("startAt")), _moment(node.get("endAt"))
        if start_or_none is None or end_or_none is None:
            return Change(visit_id, busy=False, owners=owners)
        start, end = start_or_none.astimezone(UTC), end_or_none.astimezone(UTC)
    if end <= start:
        return Change(visit_id, busy=False, owners=owners)
    title = str(node["title"])[:200] if node.get("title") else None
    return Change(visit_id, busy=True, start=start, end=end, title=title, owners=owners)


def marker(booking_id: UUID) -> str:
    """Our booking id in a request's title: a retry finds the request instead of making a second one."""
    return f"{MARKER_PREFIX}{booking_id.hex}]"


def _digits(phone: str) -> str:
    return re.sub(r"\D", "", phone)


# ---------------------------------------------------------------------------- the cost bucket
@dataclass
class Bucket:
    """An account's query-cost bucket as the last answer left it."""

    available: float
    maximum: float
    restore_rate: float
    seen_at: float  # monotonic seconds

    def now_available(self, now: float) -> float:
        return min(self.maximum, self.available + max(0.0, now - self.seen_at) * self.restore_rate)


def throttle_wait(needed: float, available: float, restore_rate: float) -> float:
    """Seconds until the bucket holds `needed` points: (needed - available) / restoreRate, 0 if it does."""
    if available >= needed:
        return 0.0
    if restore_rate <= 0:
        return float("inf")
    return (needed - available) / restore_rate


def bucket_from(extensions: Mapping[str, Any] | None, now: float) -> tuple[Bucket | None, float | None]:
    """The throttle status and the requested cost an answer's `extensions.cost` reports."""
    cost = (extensions or {}).get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        bucket = Bucket(
            available=float(status["currentlyAvailable"]),
            maximum=float(status.get("maximumAvailable", 10000)),
            restore_rate=float(status.get("restoreRate", 500)),
            seen_at=now,
        )
    except (KeyError, TypeError, ValueError):
        bucket = None
    requested = cost.get("requestedQueryCost")
    return bucket, float(requested) if isinstance(requested, int | float) else None


def _jwt_claims(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (only to read `exp` and `account_id` of our own token)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_expiry(token: str, default_seconds: float = 3600.0) -> datetime:
    exp = _jwt_claims(token).get("exp")
    if isinstance(exp, int | float):
        return datetime.fromtimestamp(exp, UTC)
    return datetime.now(UTC) + timedelta(seconds=default_seconds)


def account_key(token: str) -> str:
    """Whose bucket a token draws on: the JWT's `account_id`, else a hash of the token."""
    account = _jwt_claims(token).get("account_id")
    return f"account:{account}" if account else "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- HTTP
def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


class JobberCalendar:
    """The Jobber provider (settings read per call, tokens passed in; the cost buckets kept per account)."""

    name = "jobber"

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self.buckets: dict[str, Bucket] = {}
        self.costs: dict[str, float] = {}

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    # ------------------------------------------------------------------------ transport
    async def _http(self, operation: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        started = Timer()
        try:
            response = await provider_client().request(method, url, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
        except httpx.TimeoutException as exc:
            observe_request(self.name, operation, failure_outcome(TimeoutError()), None, started.seconds)
            raise Unavailable(f"jobber {operation}: timed out") from exc
        except httpx.HTTPError as exc:
            observe_request(self.name, operation, failure_outcome(exc), None, started.seconds)
            raise Unavailable(f"jobber {operation}: {type(exc).__name__}") from exc
        observe_request(
            self.name, operation, status_outcome(response.status_code), response.status_code, started.seconds
        )
        return response

    async def _wait_for_bucket(self, key: str, operation: str) -> None:
        bucket = self.buckets.get(key)
        if bucket is None:
            return
        needed = self.costs.get(operation, DEFAULT_COST)
        wait = throttle_wait(min(needed, bucket.maximum), bucket.now_available(clock.monotonic()), bucket.restore_rate)
        if wait <= 0:
            return
        if wait > THROTTLE_WAIT_CAP_SECONDS:
            raise RateLimited(f"jobber {operation}: cost bucket low, {wait:.1f}s to refill", reason=THROTTLED,
                              retry_after=wait)  # fmt: skip
        log.info("calendars.jobber_throttle_wait", operation=operation, seconds=round(wait, 2))
        await asyncio.sleep(wait)

    async def graphql(self, token: str, operation: str, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        """One operation's `data`; waits for the cost bucket first, retries a THROTTLED answer after the
        wait it names (within the cap). 401 → `AuthRevoked` (the caller refreshes once), 429 and a long
        throttle → `RateLimited`, 5xx/timeouts → `Unavailable`, GraphQL errors → `Refused`."""
        key = account_key(token)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-JOBBER-GRAPHQL-VERSION": self.settings.JOBBER_GRAPHQL_VERSION,
        }
        body = {"query": query, "variables": dict(variables or {}), "operationName": operation}
        for attempt in range(THROTTLED_RETRIES + 1):
            await self._wait_for_bucket(key, operation)
            response = await self._http(operation, "POST", self.settings.JOBBER_API_URL, headers=headers, json=body)
            status = response.status_code
            if status == 401:
                raise AuthRevoked(f"jobber {operation}: 401", status=401, reason="unauthorized")
            if status == 429:
                raise RateLimited(f"jobber {operation}: 429", status=429, reason="too_many_requests",
                                  retry_after=_retry_after(response, 30.0))  # fmt: skip
            if status >= 500:
                raise Unavailable(f"jobber {operation}: {status}", status=status)
            if status != 200:
                raise Refused(f"jobber {operation}: {status} {response.text[:200]}", status=status)
            try:
                answer = response.json()
            except ValueError:
                raise Unavailable(f"jobber {operation}: an answer that is not JSON") from None
            bucket, requested = bucket_from(answer.get("extensions"), clock.monotonic())
            if bucket is not None:
                self.buckets[key] = bucket
            if requested is not None:
                self.costs[operation] = requested
            errors = answer.get("errors") or []
            if any(((e.get("extensions") or {}).get("code")) == "THROTTLED" for e in errors):
                wait = throttle_wait(requested or DEFAULT_COST, bucket.available if bucket else 0.0,
                                     bucket.restore_rate if bucket else 500.0)  # fmt: skip
                if wait > THROTTLE_WAIT_CAP_SECONDS or attempt == THROTTLED_RETRIES:
                    raise RateLimited(f"jobber {operation}: THROTTLED", reason=THROTTLED, retry_after=max(wait, 1.0))
                log.info("calendars.jobber_throttled", operation=operation, wait=round(wait, 2))
                await asyncio.sleep(max(wait, 0.05))
                continue
            if errors:
                message = "; ".join(str(e.get("message")) for e in errors)[:300]
                raise Refused(f"jobber {operation}: {message}", status=200, reason="graphql_error")
            return answer.get("data") or {}
        raise RateLimited(f"jobber {operation}: THROTTLED", reason=THROTTLED, retry_after=1.0)  # pragma: no cover

    async def _mutate(self, token: str, operation: str, query: str, variables: Mapping[str, Any], field: str) -> Any:
        """A mutation's payload; its `userErrors` become `Refused` (logged with the operation and paths)."""
        payload = (await self.graphql(token, operation, query, variables)).get(field) or {}
        errors = payload.get("userErrors") or []
        if errors:
            message = "; ".join(str(e.get("message")) for e in errors)[:300]
            log.warning("calendars.jobber_user_errors", operation=operation, message=message,
                        paths=[e.get("path") for e in errors])  # fmt: skip
            raise Refused(f"jobber {operation}: {message}", status=200, reason="user_error")
        return payload

    async def _pages(
        self, token: str, operation: str, query: str, field: str, variables: dict[str, Any]
    ) -> AsyncIterator[list[Any]]:
        after: str | None = None
        while True:
            data = await self.graphql(token, operation, query, {**variables, "first": PAGE_SIZE, "after": after})
            connection = data.get(field) or {}
            yield connection.get("nodes") or []
            info = connection.get("pageInfo") or {}
            after = info.get("endCursor")
            if not info.get("hasNextPage") or not after:
                return

    # ------------------------------------------------------------------------ OAuth
    def authorization_url(self, state: str, redirect_uri: str) -> str:
        query = urlencode(
            {
                "client_id": self.settings.JOBBER_CLIENT_ID,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "state": state,
            }
        )
        return f"{self.settings.JOBBER_OAUTH_URL}/authorize?{query}"

    async def _token(self, operation: str, form: dict[str, str]) -> Grant:
        settings = self.settings
        form = {**form, "client_id": settings.JOBBER_CLIENT_ID, "client_secret": settings.JOBBER_CLIENT_SECRET}
        response = await self._http(operation, "POST", f"{settings.JOBBER_OAUTH_URL}/token", data=form)
        if response.status_code in (400, 401):
            try:
                reason = str(response.json().get("error") or "")
            except ValueError:
                reason = ""
            raise AuthRevoked(f"jobber {operation}: {response.status_code} {reason}".strip(),
                              status=response.status_code, reason=reason or None)  # fmt: skip
        if response.status_code >= 500:
            raise Unavailable(f"jobber {operation}: {response.status_code}", status=response.status_code)
        if response.status_code != 200:
            raise Refused(f"jobber {operation}: {response.status_code}", status=response.status_code)
        body = response.json()
        access = str(body["access_token"])
        expires_at = (
            datetime.now(UTC) + timedelta(seconds=int(body["expires_in"]))
            if body.get("expires_in")
            else token_expiry(access)
        )
        return Grant(access_token=access, expires_at=expires_at, scopes=frozenset(),
                     refresh_token=body.get("refresh_token"))  # fmt: skip

    async def exchange_code(self, code: str, redirect_uri: str) -> Grant:
        return await self._token(
            "oauth.exchange", {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        )

    async def refresh(self, refresh_token: str) -> Grant:
        """A new access token and a NEW refresh token (the old one is refused from now on)."""
        if not refresh_token:
            raise AuthRevoked("a personal Jobber token (JOBBER_API_TOKEN) cannot be refreshed: set a new one")
        return await self._token("oauth.refresh", {"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def revoke(self, token: str) -> None:
        """Jobber has no revoke endpoint: the owner removes the app in Jobber (APP_DISCONNECT tells us)."""

    async def account(self, token: str) -> tuple[str, str]:
        data = await self.graphql(token, "Account", ACCOUNT)
        account = data.get("account") or {}
        if not account.get("id"):
            raise Refused("jobber Account: no account id in the answer")
        return str(account["id"]), str(account.get("name") or "")

    async def users(self, token: str) -> list[dict[str, str]]:
        """The account's users: id, name, email."""
        found = []
        async for nodes in self._pages(token, "Users", USERS, "users", {}):
            for node in nodes:
                found.append(
                    {
                        "id": str(node["id"]),
                        "name": str((node.get("name") or {}).get("full") or ""),
                        "email": str((node.get("email") or {}).get("raw") or ""),
                    }
                )
        return found

    # ------------------------------------------------------------------------ sync
    async def visits(self, token: str, window: Window, zone: ZoneInfo) -> SyncResult:
        result = SyncResult(cursor=WINDOW_CURSOR, whole_window=True)
        variables = {"from": _iso(window.start), "to": _iso(window.end), "timezone": zone.key}
        async for nodes in self._pages(token, "Visits", VISITS, "visits", variables):
            result.pages += 1
            for node in nodes:
                change = visit_change(node, zone)
                if change is not None:
                    result.changes.append(change)
        return result

    async def full_sync(self, token: str, calendar_id: str, window: Window, zone: ZoneInfo) -> SyncResult:
        return await self.visits(token, window, zone)

    async def incremental_sync(self, token: str, calendar_id: str, cursor: str, zone: ZoneInfo) -> SyncResult:
        """The same window diff as a full sync (Jobber has no changed-since filter)."""
        now = datetime.now(UTC)
        settings = self.settings
        window = Window(now - timedelta(days=settings.CALENDAR_SYNC_PAST_DAYS),
                        now + timedelta(days=settings.CALENDAR_SYNC_FUTURE_DAYS))  # fmt: skip
        return await self.visits(token, window, zone)

    async def visit(self, token: str, visit_id: str, zone: ZoneInfo) -> Change:
        """One visit as Jobber has it now; a deleted one is free time (webhook payloads carry ids only)."""
        node = (await self.graphql(token, "Visit", VISIT, {"id": visit_id})).get("visit")
        change = visit_change(node, zone) if node else None
        return change or Change(visit_id, busy=False)

    async def watch(
        self, token: str, calendar_id: str, channel_id: str, channel_token: str, address: str, ttl_seconds: int
    ) -> None:
        return None  # Jobber's webhooks are app-wide (subscribed on the app)

    async def stop(self, token: str, channel_id: str, resource_id: str | None) -> None:
        return None

    async def busy(
        self, token: str, calendar_id: str, start: datetime, end: datetime, zone: ZoneInfo, timeout: float
    ) -> Sequence[Change]:
        async with asyncio.timeout(timeout):
            result = await self.visits(token, Window(start - timedelta(days=1), end), zone)
        return [c for c in result.changes if c.busy and c.start and c.end and c.start < end and c.end > start]

    # ------------------------------------------------------------------------ write-back
    async def find_request(self, token: str, booking_id: UUID) -> dict[str, Any] | None:
        term = marker(booking_id)
        nodes = (await self.graphql(token, "RequestsByTerm", REQUESTS_BY_TERM, {"term": term})).get("requests") or {}
        return next((n for n in nodes.get("nodes") or () if term in str(n.get("title") or "")), None)

    async def _client_for(self, token: str, event: BookingEvent) -> str:
        """The client with the caller's phone number, or a new one."""
        phone = event.customer_phone or ""
        if phone:
            data = await self.graphql(token, "ClientsByPhone", CLIENTS_BY_PHONE, {"term": phone})
            for node in (data.get("clients") or {}).get("nodes") or ():
                if any(_digits(str(p.get("number") or "")).endswith(_digits(phone)[-10:])
                       for p in node.get("phones") or ()):  # fmt: skip
                    return str(node["id"])
        names = (event.customer_name or "").split()
        first = names[0] if names else "Caller"
        last = " ".join(names[1:]) if len(names) > 1 else (phone[-4:] if phone else "NeverMissCall")
        client_input: dict[str, Any] = {"firstName": first, "lastName": last}
        if phone:
            client_input["phones"] = [{"number": phone, "primary": True}]
        payload = await self._mutate(token, "ClientCreate", CLIENT_CREATE, {"input": client_input}, "clientCreate")
        return str(payload["client"]["id"])

    async def write_booking(self, token: str, calendar_id: str, event: BookingEvent) -> str:
        """The booking's request, assigned to the Jobber user `calendar_id`: found by our marker (a retry,
        a crash after the create) and rescheduled if it moved, or created with its client and note.
        Returns "<request id> <assessment id>"."""
        found = await self.find_request(token, event.booking_id)
        if found is not None:
            return await self._reschedule(token, found, event)
        client_id = await self._client_for(token, event)
        request_input = {
            "clientId": client_id,
            "title": f"{event.title} {marker(event.booking_id)}"[:255],
            "assessment": {"startAt": _iso(event.start), "endAt": _iso(event.end), "assignedUserIds": [calendar_id]},
        }
        payload = await self._mutate(token, "RequestCreate", REQUEST_CREATE, {"input": request_input}, "requestCreate")
        request = payload.get("request") or {}
        request_id = str(request["id"])
        await self._mutate(token, "RequestCreateNote", REQUEST_CREATE_NOTE,
                           {"requestId": request_id, "input": {"message": event.description}},
                           "requestCreateNote")  # fmt: skip
        return f"{request_id} {(request.get('assessment') or {}).get('id') or ''}".strip()

    async def _reschedule(self, token: str, request: Mapping[str, Any], event: BookingEvent) -> str:
        assessment = request.get("assessment") or {}
        ids = f"{request['id']} {assessment.get('id') or ''}".strip()
        if not assessment.get("id"):
            return ids
        if _moment(assessment.get("startAt")) == event.start and _moment(assessment.get("endAt")) == event.end:
            return ids
        await self._mutate(token, "AssessmentEditSchedule", ASSESSMENT_EDIT_SCHEDULE,
                           {"assessmentId": assessment["id"],
                            "input": {"startAt": _iso(event.start), "endAt": _iso(event.end)}},
                           "assessmentEditSchedule")  # fmt: skip
        return ids

    async def update_booking(self, token: str, calendar_id: str, event: BookingEvent) -> str:
        return await self.write_booking(token, calendar_id, event)

    async def delete_booking(self, token: str, calendar_id: str, booking_id: UUID) -> None:
        """Archive the booking's request; none there, or archived already: done."""
        found = await self.find_request(token, booking_id)
        if found is None:
            return
        try:
            await self._mutate(token, "RequestArchive", REQUEST_ARCHIVE, {"requestId": found["id"]}, "requestArchive")
        except Refused as exc:
            if "already archived" not in str(exc).lower():
                raise


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


JOBBER = JobberCalendar()

"""Google Calendar as a calendar provider: OAuth (web-server flow), events.list sync (syncToken,
pageToken, 410), push channels, freeBusy, and our bookings written back under ids derived from ours.

Wire facts are in ../shared/providers.md ("Google Calendar"). Where they are unconfirmed the code
accepts both readings: a cancelled recurring series may come back as its parent id only or as each
instance (both remove the instances' blocks); the freeBusy scope may be `calendar.freebusy` or
`calendar.events.freebusy`; an incremental sync may return events outside the initial window (kept:
they are busy time all the same).

Every request is counted in `provider_requests_total{provider="google"}` (observability's flusher).
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import structlog

from nmc.calendars.http import REQUEST_TIMEOUT_SECONDS, provider_client
from nmc.calendars.provider import (
    OUR_BOOKING_PROPERTY,
    AuthRevoked,
    BookingEvent,
    Change,
    FullSyncRequired,
    Grant,
    NotFound,
    OpenedChannel,
    ProviderError,
    RateLimited,
    Refused,
    SyncResult,
    Unavailable,
    Window,
)
from nmc.observability.providers import Timer, failure_outcome, observe_request, status_outcome
from nmc.settings import Settings, get_settings

log = structlog.get_logger(module="calendars")

SCOPE_PREFIX = "https://www.googleapis.com/auth/"
# The narrowest scopes that read busy time and write our own events (providers.md).
REQUESTED_SCOPES = (f"{SCOPE_PREFIX}calendar.events.owned", f"{SCOPE_PREFIX}calendar.freebusy")
# What a grant must hold (any one of each group): users can untick scopes on the consent screen.
READ_WRITE_SCOPES = frozenset(
    {f"{SCOPE_PREFIX}calendar.events.owned", f"{SCOPE_PREFIX}calendar.events", f"{SCOPE_PREFIX}calendar"}
)
FREEBUSY_SCOPES = frozenset(
    {
        f"{SCOPE_PREFIX}calendar.freebusy",
        f"{SCOPE_PREFIX}calendar.events.freebusy",
        f"{SCOPE_PREFIX}calendar.readonly",
        f"{SCOPE_PREFIX}calendar",
    }
)
PAGE_SIZE = 2500
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
BUSY_EVENT_TYPES = frozenset({"default", "fromGmail", "outOfOffice"})
EVENT_ID_PREFIX = "nmc"  # base32hex ([a-v0-9]): "nmc" + the booking id's hex digits


def event_id_for(booking_id: UUID) -> str:
    """The event id a booking gets in every calendar: a retried insert is a 409, never a second event."""
    return f"{EVENT_ID_PREFIX}{booking_id.hex}"


def missing_scopes(granted: frozenset[str]) -> list[str]:
    """What the owner unticked that we cannot work without (empty when the grant is enough)."""
    missing = []
    if not granted & READ_WRITE_SCOPES:
        missing.append("calendar.events.owned")
    if not granted & FREEBUSY_SCOPES:
        missing.append("calendar.freebusy")
    return missing


# ---------------------------------------------------------------------------- events → changes
def _instant(value: Mapping[str, Any], zone: ZoneInfo) -> datetime | None:
    """A start/end: `dateTime` (with its offset, or in its `timeZone`), or an all-day `date` at local midnight."""
    if value.get("dateTime"):
        moment = datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=_zone(value.get("timeZone"), zone))
        return moment.astimezone(UTC)
    if value.get("date"):
        day = date.fromisoformat(str(value["date"]))
        return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    return None


def _zone(name: Any, default: ZoneInfo) -> ZoneInfo:
    try:
        return ZoneInfo(str(name)) if name else default
    except (ValueError, KeyError):
        return default


def is_ours(item: Mapping[str, Any]) -> bool:
    private = (item.get("extendedProperties") or {}).get("private") or {}
    return OUR_BOOKING_PROPERTY in private


def _declined_by_owner(item: Mapping[str, Any]) -> bool:
    return any(
        attendee.get("self") and attendee.get("responseStatus") == "declined"
        for attendee in item.get("attendees") or ()
    )


def change_from(item: Mapping[str, Any], zone: ZoneInfo) -> Change | None:
    """The busy-time rules: an event blocks its calendar's resource unless it is cancelled, free
    (`transparent`), of a kind that is not time taken (birthday, focus time, working location), declined
    by the owner, or one of ours (our bookings are allocations already). All-day events block their local
    days in the tenant's zone (`end.date` is exclusive)."""
    event_id = item.get("id")
    if not event_id:
        return None
    event_id = str(event_id)
    if item.get("status") == "cancelled":
        # Only the id (a deleted event or series), or an instance with recurringEventId/originalStartTime.
        return Change(event_id, busy=False, series="recurringEventId" not in item)
    if (
        is_ours(item)
        or item.get("transparency") == "transparent"
        or item.get("eventType", "default") not in BUSY_EVENT_TYPES
        or _declined_by_owner(item)
    ):
        return Change(event_id, busy=False)
    start = _instant(item.get("start") or {}, zone)
    end = _instant(item.get("end") or {}, zone)
    if start is None or end is None or end <= start:
        return Change(event_id, busy=False)
    title = str(item["summary"])[:200] if item.get("summary") else None
    return Change(event_id, busy=True, start=start, end=end, title=title)


# ---------------------------------------------------------------------------- HTTP
def _error_reason(response: httpx.Response) -> tuple[str | None, str]:
    """(reason, message) from Google's `{"error": {"code", "message", "errors": [{"reason"}]}}` or OAuth's
    `{"error": "invalid_grant", "error_description"}`."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return error, str(body.get("error_description") or error)[:200]
    if isinstance(error, dict):
        errors = error.get("errors") or [{}]
        reason = errors[0].get("reason") if isinstance(errors[0], dict) else None
        return (str(reason) if reason else None), str(error.get("message") or "")[:200]
    return None, response.text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, (parsed - datetime.now(UTC)).total_seconds()) if parsed else None


def classify(response: httpx.Response, operation: str) -> ProviderError:
    """The neutral error for a Google answer that is not a success."""
    status = response.status_code
    reason, message = _error_reason(response)
    text = f"google {operation}: {status} {reason or ''} {message}".strip()
    if status == 400 and reason == "invalid_grant":
        return AuthRevoked(text, status=status, reason=reason)
    if status == 401:
        return AuthRevoked(text, status=status, reason=reason or "authError")
    if status == 410 and operation == "events.list":
        return FullSyncRequired(text, status=status, reason=reason or "fullSyncRequired")
    if status == 429 or (status == 403 and reason in RATE_LIMIT_REASONS):
        return RateLimited(text, status=status, reason=reason, retry_after=_retry_after(response))
    if status >= 500:
        return Unavailable(text, status=status, reason=reason)
    if status in (404, 410):
        return NotFound(text, status=status, reason=reason)
    return Refused(text, status=status, reason=reason)


class GoogleCalendar:
    """The Google provider (stateless: settings are read per call, tokens are passed in)."""

    name = "google"

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings or get_settings()

    def _api(self, path: str) -> str:
        return f"{self.settings.GOOGLE_API_BASE_URL}/calendar/v3{path}"

    @staticmethod
    def _calendar(calendar_id: str) -> str:
        return quote(calendar_id, safe="")

    async def _request(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        token: str | None = None,
        timeout: float | None = None,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> httpx.Response:
        """One request, counted; a non-`ok` answer raises its neutral error, a timeout `Unavailable`
        (or `TimeoutError` when the caller set its own short `timeout`)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = Timer()
        try:
            response = await provider_client().request(
                method, url, headers=headers, timeout=timeout or REQUEST_TIMEOUT_SECONDS, **kwargs
            )
        except httpx.TimeoutException as exc:
            observe_request(self.name, operation, failure_outcome(TimeoutError()), None, started.seconds)
            if timeout is not None:
                raise TimeoutError(f"google {operation} did not answer within {timeout}s") from exc
            raise Unavailable(f"google {operation}: timed out") from exc
        except httpx.HTTPError as exc:
            observe_request(self.name, operation, failure_outcome(exc), None, started.seconds)
            raise Unavailable(f"google {operation}: {type(exc).__name__}") from exc
        observe_request(
            self.name, operation, status_outcome(response.status_code), response.status_code, started.seconds
        )
        if response.status_code not in ok:
            raise classify(response, operation)
        return response

    # ------------------------------------------------------------------------ OAuth
    def authorization_url(self, state: str, redirect_uri: str) -> str:
        query = urlencode(
            {
                "client_id": self.settings.GOOGLE_CLIENT_ID,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": " ".join(REQUESTED_SCOPES),
                "access_type": "offline",
                "prompt": "consent",  # always a refresh token, even on a reconnect
                "include_granted_scopes": "true",
                "state": state,
            }
        )
        return f"{self.settings.GOOGLE_OAUTH_BASE_URL}/o/oauth2/v2/auth?{query}"

    async def _token(self, operation: str, form: dict[str, str]) -> Grant:
        settings = self.settings
        form = {**form, "client_id": settings.GOOGLE_CLIENT_ID, "client_secret": settings.GOOGLE_CLIENT_SECRET}
        response = await self._request(operation, "POST", f"{settings.GOOGLE_TOKEN_BASE_URL}/token", data=form)
        body = response.json()
        return Grant(
            access_token=str(body["access_token"]),
            expires_at=datetime.now(UTC) + timedelta(seconds=int(body.get("expires_in", 3600))),
            scopes=frozenset(str(body.get("scope", "")).split()),
            refresh_token=body.get("refresh_token"),
        )

    async def exchange_code(self, code: str, redirect_uri: str) -> Grant:
        return await self._token(
            "oauth.exchange", {"code": code, "grant_type": "authorization_code", "redirect_uri": redirect_uri}
        )

    async def refresh(self, refresh_token: str) -> Grant:
        return await self._token("oauth.refresh", {"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def revoke(self, token: str) -> None:
        """Revoking an already revoked token is a 400: done as well."""
        try:
            await self._request(
                "oauth.revoke", "POST", f"{self.settings.GOOGLE_TOKEN_BASE_URL}/revoke", data={"token": token}
            )
        except (Refused, AuthRevoked):
            return

    # ------------------------------------------------------------------------ sync
    async def _list(self, token: str, calendar_id: str, params: dict[str, str], zone: ZoneInfo) -> SyncResult:
        """Every page of an events.list; the sync token only comes with the last page."""
        result = SyncResult()
        url = self._api(f"/calendars/{self._calendar(calendar_id)}/events")
        page_token: str | None = None
        while True:
            query = {**params, "singleEvents": "true", "maxResults": str(PAGE_SIZE)}
            if page_token:
                query["pageToken"] = page_token
            body = (await self._request("events.list", "GET", url, token=token, params=query)).json()
            result.pages += 1
            for item in body.get("items") or ():  # a page may be empty while nextPageToken is set
                change = change_from(item, zone)
                if change is not None:
                    result.changes.append(change)
            page_token = body.get("nextPageToken")
            if not page_token:
                result.cursor = body.get("nextSyncToken")
                return result

    async def full_sync(self, token: str, calendar_id: str, window: Window, zone: ZoneInfo) -> SyncResult:
        params = {"timeMin": _rfc3339(window.start), "timeMax": _rfc3339(window.end)}
        return await self._list(token, calendar_id, params, zone)

    async def incremental_sync(self, token: str, calendar_id: str, cursor: str, zone: ZoneInfo) -> SyncResult:
        return await self._list(token, calendar_id, {"syncToken": cursor}, zone)

    # ------------------------------------------------------------------------ push
    async def watch(
        self, token: str, calendar_id: str, channel_id: str, channel_token: str, address: str, ttl_seconds: int
    ) -> OpenedChannel:
        body = {
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": channel_token,
            "params": {"ttl": str(ttl_seconds)},
        }
        url = self._api(f"/calendars/{self._calendar(calendar_id)}/events/watch")
        answer = (await self._request("events.watch", "POST", url, token=token, json=body)).json()
        expiration = answer.get("expiration")
        expires_at = (
            datetime.fromtimestamp(int(expiration) / 1000, UTC)
            if expiration
            else datetime.now(UTC) + timedelta(seconds=ttl_seconds)
        )
        return OpenedChannel(channel_id=channel_id, resource_id=answer.get("resourceId"), expires_at=expires_at)

    async def stop(self, token: str, channel_id: str, resource_id: str | None) -> None:
        """A channel already gone (404) is stopped."""
        body = {"id": channel_id, "resourceId": resource_id or ""}
        try:
            await self._request("channels.stop", "POST", self._api("/channels/stop"), token=token, json=body,
                                ok=(200, 204))  # fmt: skip
        except NotFound:
            return

    # ------------------------------------------------------------------------ live check
    async def busy(
        self, token: str, calendar_id: str, start: datetime, end: datetime, zone: ZoneInfo, timeout: float
    ) -> Sequence[Change]:
        """freeBusy first; when it says busy, the events there decide (our own written-back events count
        as busy in freeBusy, but they are bookings the database already knows). Both within `timeout`."""
        async with asyncio.timeout(timeout):
            body = {"timeMin": _rfc3339(start), "timeMax": _rfc3339(end), "items": [{"id": calendar_id}]}
            answer = (
                await self._request("freebusy", "POST", self._api("/freeBusy"), token=token, json=body, timeout=timeout)
            ).json()
            calendar = (answer.get("calendars") or {}).get(calendar_id) or {}
            if calendar.get("errors") and not calendar.get("busy"):
                reasons = ",".join(str(e.get("reason")) for e in calendar["errors"])
                raise Unavailable(f"google freebusy: calendar errors {reasons}")
            if not calendar.get("busy"):
                return []
            url = self._api(f"/calendars/{self._calendar(calendar_id)}/events")
            query = {"timeMin": _rfc3339(start), "timeMax": _rfc3339(end), "singleEvents": "true", "maxResults": "250"}
            items = (
                await self._request("events.list", "GET", url, token=token, params=query, timeout=timeout)
            ).json().get("items") or []
        changes = [change_from(item, zone) for item in items]
        return [
            c for c in changes if c is not None and c.busy and c.start and c.end and c.start < end and c.end > start
        ]

    # ------------------------------------------------------------------------ write-back
    def _event_body(self, event: BookingEvent) -> dict[str, Any]:
        return {
            "id": event_id_for(event.booking_id),
            "summary": event.title,
            "description": event.description,
            "start": {"dateTime": _rfc3339(event.start), "timeZone": event.zone},
            "end": {"dateTime": _rfc3339(event.end), "timeZone": event.zone},
            "status": "confirmed",  # a patch of an event deleted earlier brings it back
            "extendedProperties": {"private": {OUR_BOOKING_PROPERTY: str(event.booking_id)}},
        }

    async def write_booking(
        self, token: str, calendar_id: str, event: BookingEvent, *, patch_if_there: bool = True
    ) -> str:
        """Insert under the id derived from the booking's; a 409 means it is there already: patch it."""
        url = self._api(f"/calendars/{self._calendar(calendar_id)}/events")
        try:
            await self._request(
                "events.insert", "POST", url, token=token, params={"sendUpdates": "none"}, json=self._event_body(event)
            )
        except Refused as exc:
            if exc.status != 409 or not patch_if_there:
                raise
            return await self.update_booking(token, calendar_id, event, insert_if_missing=False)
        return event_id_for(event.booking_id)

    async def update_booking(
        self, token: str, calendar_id: str, event: BookingEvent, *, insert_if_missing: bool = True
    ) -> str:
        """Patch (never `update`: other fields the owner set stay); an event that is not there is inserted."""
        event_id = event_id_for(event.booking_id)
        url = self._api(f"/calendars/{self._calendar(calendar_id)}/events/{event_id}")
        body = self._event_body(event)
        body.pop("id")
        try:
            await self._request("events.patch", "PATCH", url, token=token, params={"sendUpdates": "none"}, json=body)
        except NotFound:
            if not insert_if_missing:
                raise
            return await self.write_booking(token, calendar_id, event, patch_if_there=False)
        return event_id

    async def delete_booking(self, token: str, calendar_id: str, booking_id: UUID) -> None:
        """Deleted, or gone already (404/410): done either way."""
        url = self._api(f"/calendars/{self._calendar(calendar_id)}/events/{event_id_for(booking_id)}")
        try:
            await self._request("events.delete", "DELETE", url, token=token, params={"sendUpdates": "none"},
                                ok=(200, 204))  # fmt: skip
        except NotFound:
            return


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


GOOGLE = GoogleCalendar()

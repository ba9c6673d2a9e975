"""The one shape every calendar provider has (Google today, Jobber next), and its neutral vocabulary.

A provider speaks its wire format and classifies what it reads: each event of a sync becomes a
`Change` (busy over an interval, or gone), each failure one of the `ProviderError`s below. What is
done with them — blocks through scheduling's face, the connection's status, retries — is the
module's, the same for every provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID
from zoneinfo import ZoneInfo

OUR_BOOKING_PROPERTY = "nmc_booking_id"  # a private extended property on every event we write


# ---------------------------------------------------------------------------- errors
class ProviderError(Exception):
    """A request the provider did not carry out. `retryable`: the same request may succeed later."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class AuthRevoked(ProviderError):
    """The grant is gone (401 after a refresh, `invalid_grant`): the owner must connect again."""


class FullSyncRequired(ProviderError):
    """The cursor is no longer valid (Google: 410 `fullSyncRequired`): wipe and sync everything."""


class RateLimited(ProviderError):
    """403 `rateLimitExceeded`/`userRateLimitExceeded`/`quotaExceeded`, or 429: back off and retry."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None,
                 retry_after: float | None = None) -> None:  # fmt: skip
        super().__init__(message, status=status, reason=reason)
        self.retry_after = retry_after


class Unavailable(ProviderError):
    """5xx, a timeout or a broken connection: retry with backoff."""

    retryable = True


class Refused(ProviderError):
    """Any other refusal (403 forbidden, 404 no such calendar, 400): not retried until something changes."""


class NotFound(Refused):
    """404/410 for one object (an event, a channel): for a delete, that is done."""


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Grant:
    """What the token endpoint answered."""

    access_token: str
    expires_at: datetime
    scopes: frozenset[str]
    refresh_token: str | None = None  # on the first exchange; a refresh may rotate it


@dataclass(frozen=True)
class Change:
    """One event of a sync: busy over [start, end), or `busy=False` (cancelled, free, declined, ours)."""

    external_id: str
    busy: bool
    start: datetime | None = None
    end: datetime | None = None
    title: str | None = None
    # A cancelled recurring series may come back as its parent id only: its instances (`<id>_…`) go too.
    series: bool = False
    # Whose time it is at the provider (Jobber: the visit's assigned users; the module maps them to
    # resources). Empty: the connection's own resource (Google).
    owners: tuple[str, ...] = ()


@dataclass
class SyncResult:
    """Every change of a sync (all pages) and the cursor to use next (only once they are applied)."""

    changes: list[Change] = field(default_factory=list)
    cursor: str | None = None
    pages: int = 0
    # Every event of the window is here (Jobber re-pulls the window): what is absent is gone.
    whole_window: bool = False


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class OpenedChannel:
    channel_id: str
    resource_id: str | None
    expires_at: datetime


@dataclass(frozen=True)
class BookingEvent:
    """A booking as it is written into a calendar (our id in a private extended property)."""

    booking_id: UUID
    start: datetime
    end: datetime
    zone: str
    title: str
    description: str
    customer_phone: str | None = None  # Jobber finds or creates the client by it
    customer_name: str | None = None


class CalendarProvider(Protocol):
    """DESIGN.md "Calendar providers": Google implements all of it; Jobber's webhooks are app-wide, so
    its `watch`/`stop` do nothing."""

    name: str

    def authorization_url(self, state: str, redirect_uri: str) -> str: ...

    async def exchange_code(self, code: str, redirect_uri: str) -> Grant: ...

    async def refresh(self, refresh_token: str) -> Grant: ...

    async def revoke(self, token: str) -> None: ...

    async def full_sync(self, token: str, calendar_id: str, window: Window, zone: ZoneInfo) -> SyncResult: ...

    async def incremental_sync(self, token: str, calendar_id: str, cursor: str, zone: ZoneInfo) -> SyncResult:
        """Raises `FullSyncRequired` when the cursor is no longer valid."""
        ...

    async def watch(
        self, token: str, calendar_id: str, channel_id: str, channel_token: str, address: str, ttl_seconds: int
    ) -> OpenedChannel | None: ...

    async def stop(self, token: str, channel_id: str, resource_id: str | None) -> None: ...

    async def busy(
        self, token: str, calendar_id: str, start: datetime, end: datetime, zone: ZoneInfo, timeout: float
    ) -> Sequence[Change]:
        """Live busy time over [start, end) that is not ours (raises `TimeoutError` past `timeout`)."""
        ...

    async def write_booking(self, token: str, calendar_id: str, event: BookingEvent) -> str: ...

    async def update_booking(self, token: str, calendar_id: str, event: BookingEvent) -> str: ...

    async def delete_booking(self, token: str, calendar_id: str, booking_id: UUID) -> None: ...

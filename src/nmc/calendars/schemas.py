"""What the calendars REST API reads and writes, and what a push notification carries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec

CalendarId = Annotated[str, msgspec.Meta(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f]+$")]


class CalendarConnect(msgspec.Struct, forbid_unknown_fields=True):
    resource_id: UUID
    calendar_id: CalendarId = "primary"


class AuthorizationUrl(msgspec.Struct):
    authorization_url: str


class CalendarConnectionRead(msgspec.Struct):
    id: UUID
    provider: str
    resource_id: UUID
    resource_name: str | None
    calendar_id: str
    status: str  # active | needs_reauth | error
    last_synced_at: datetime | None
    last_error: str | None  # masked
    last_error_at: datetime | None
    next_poll_at: datetime | None  # when the poll tick syncs it next (None unless active)
    failed_write_backs: int  # bookings not written to the calendar (retried; replayed on reconnect)
    push_error: str | None  # why no push channel is open (the poll covers it)
    connected_at: datetime


class CalendarConnectionUpdate(msgspec.Struct, forbid_unknown_fields=True):
    calendar_id: CalendarId | None = None
    resource_id: UUID | None = None


JobberId = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]


class JobberConnect(msgspec.Struct, forbid_unknown_fields=True):
    resource_id: UUID  # where the connection is listed (busy time goes to the mapped users' resources)


class JobberUserRead(msgspec.Struct):
    id: str
    name: str
    email: str | None
    resource_id: UUID | None  # the resource their visits block (None: unmapped, they block nothing)


class JobberUserMap(msgspec.Struct, forbid_unknown_fields=True):
    jobber_user_id: JobberId
    resource_id: UUID | None  # None: unmap


class JobberUserMapping(msgspec.Struct, forbid_unknown_fields=True):
    mappings: Annotated[list[JobberUserMap], msgspec.Meta(max_length=500)]


class JobberWebhookEvent(msgspec.Struct, frozen=True):
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    accountId: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    itemId: Annotated[str, msgspec.Meta(max_length=255)] = ""
    appId: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    occurredAt: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    occuredAt: Annotated[str, msgspec.Meta(max_length=64)] | None = None

    @property
    def occurred_at(self) -> str:
        return self.occurredAt or self.occuredAt or ""


class JobberWebhookData(msgspec.Struct, frozen=True):
    webHookEvent: JobberWebhookEvent


class JobberWebhook(msgspec.Struct, frozen=True):
    """A Jobber webhook's body (ids only; the item is re-queried)."""

    data: JobberWebhookData


class GoogleNotification(msgspec.Struct, frozen=True):
    """A push notification's headers (the body is empty), as the ledger stores them."""

    channel_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    resource_state: Annotated[str, msgspec.Meta(max_length=20)]
    message_number: Annotated[str, msgspec.Meta(max_length=20)] = "0"
    resource_id: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    resource_uri: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    channel_expiration: Annotated[str, msgspec.Meta(max_length=64)] | None = None

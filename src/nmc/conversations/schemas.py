"""What the inbox REST API reads and writes (msgspec; documented in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from nmc.events import E164

# The UI may spell it the way.
ThreadStatusFilter = Literal["open", "booked", "closed", "opted_out", "opted-out"]
# A time of day (00:00-23:59), e.g. where quiet hours start.
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", examples=["21:00"])]
TemplateText = Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
SmsBody = Annotated[str, msgspec.Meta(min_length=1, max_length=1600, description="Any Unicode, up to 1,600 characters")]


class MediaRead(msgspec.Struct):
    url: str
    content_type: str | None = None


class ThreadRead(msgspec.Struct, kw_only=True):
    id: UUID
    caller: str
    tenant_number: str
    status: str  # open | booked | closed | opted_out
    unread_count: int
    last_activity_at: datetime
    last_message_preview: str | None
    # When the thread's one follow-up text is due (None: none scheduled).
    follow_up_due_at: datetime | None
    created_at: datetime


class ThreadPage(msgspec.Struct):
    items: list[ThreadRead]
    # Pass as `cursor` for the next page; None on the last page.
    next_cursor: str | None = None


class MessageRead(msgspec.Struct, kw_only=True):
    id: UUID
    direction: str  # inbound | outbound
    kind: str  # inbound | first_sms | reply | follow_up | help | booking (the booking dialog's texts)
    body: str
    media: list[MediaRead]
    # inbound: received; outbound: pending, scheduled, paused, sending, accepted, queued, sent,
    # delivered, undelivered, failed, suppressed
    status: str
    suppressed_reason: str | None
    error_code: int | None
    created_at: datetime
    sent_at: datetime | None


class ThreadDetail(ThreadRead, kw_only=True):
    # The latest messages, oldest first.
    messages: list[MessageRead]
    # Pass as `before` for older messages; None when these are all.
    earlier_messages_cursor: str | None = None


class ReplyCreate(msgspec.Struct):
    body: SmsBody


class TemplateDefaults(msgspec.Struct, kw_only=True):
    first_sms_business_hours: str
    first_sms_after_hours: str
    booking_prompt: str
    follow_up_template: str
    help_text: str
    merge_fields: list[str]


class MessagingSettingsWrite(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole settings document (PUT): an omitted field takes its default; a null template uses ours."""

    first_sms_business_hours: TemplateText | None = None
    first_sms_after_hours: TemplateText | None = None
    booking_prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=300)] | None = None
    follow_up_template: TemplateText | None = None
    # Minutes after the first SMS; null: no follow-up.
    follow_up_delay_minutes: Annotated[int, msgspec.Meta(ge=5, le=10080)] | None = None
    help_text: TemplateText | None = None
    # The job callers book by SMS (a job type's id); null: the oldest active job type.
    booking_job_type_id: UUID | None = None
    owner_alerts_enabled: bool = True
    # Where owner alerts go; null: the forwarding number of the tenant number.
    owner_alert_number: E164 | None = None
    # Both null: no quiet hours. In the tenant's time zone; may wrap midnight.
    quiet_hours_start: ClockTime | None = "21:00"
    quiet_hours_end: ClockTime | None = "08:00"
    quiet_hours_policy: Literal["delay", "suppress"] = "delay"
    # A caller who calls again within this many minutes gets no second first SMS.
    cooldown_minutes: Annotated[int, msgspec.Meta(ge=0, le=10080)] = 60


class MessagingSettingsRead(MessagingSettingsWrite, kw_only=True):
    defaults: TemplateDefaults
    updated_at: datetime | None = None

"""The words of texting: what a message is, where it stands, why one was not sent."""

from __future__ import annotations

from enum import StrEnum


class MessageKind(StrEnum):
    FIRST_SMS = "first_sms"
    REPLY = "reply"  # an owner's reply from the inbox
    FOLLOW_UP = "follow_up"
    HELP = "help"  # the answer to HELP or INFO
    OWNER_ALERT = "owner_alert"
    BOOKING = "booking"  # the booking dialog's texts
    INBOUND = "inbound"  # a caller's text


class MessageStatus(StrEnum):
    PENDING = "pending"  # queued, not yet planned
    PAUSED = "paused"  # waits for PAUSE_OUTBOUND_SMS to be lifted
    SCHEDULED = "scheduled"  # waits for quiet hours to end
    SENDING = "sending"  # committed before the Messages request: the outcome may be unknown
    SUPPRESSED = "suppressed"  # decided not to send (`SuppressedReason`)
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    READ = "read"
    RECEIVED = "received"  # inbound


# Nothing more to do for the sending pipeline.
DONE_STATUSES = frozenset(
    {
        MessageStatus.ACCEPTED,
        MessageStatus.QUEUED,
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.READ,
        MessageStatus.SUPPRESSED,
    }
)


class SuppressedReason(StrEnum):
    TENANT_INACTIVE = "tenant_inactive"
    OPTED_OUT = "opted_out"
    LANDLINE = "landline"
    COOLDOWN = "cooldown"  # the same caller got a first SMS within `cooldown_minutes`
    QUIET_HOURS = "quiet_hours"  # the tenant's `suppress` policy


class QuietHoursPolicy(StrEnum):
    DELAY = "delay"
    SUPPRESS = "suppress"


class LineType(StrEnum):
    """Twilio Lookup's line types that matter to us (it has more; any other value is kept as given)."""

    LANDLINE = "landline"
    MOBILE = "mobile"
    UNKNOWN = "unknown"


# Twilio error codes the pipeline answers itself.
UNSUBSCRIBED = 21610  # the recipient texted STOP: record an opt-out
UNREACHABLE_LANDLINE = 30006  # landline or unreachable carrier: mark the number

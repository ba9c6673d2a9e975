"""The words of texting: what a message is, where it stands, why one was not sent."""

from __future__ import annotations

from enum import StrEnum


class MessageKind(StrEnum):
    FIRST_SMS = "first_sms"
    REPLY = "reply"  # an owner's reply from the inbox
    FOLLOW_UP = "follow_up"
    HELP = "help"  # the answer to HELP or INFO
    OWNER_ALERT = "owner_alert"
    FORWARDING_CODE = "forwarding_code"  # to the owner: the code that verifies a forwarding number (issue #15)
    BOOKING = "booking"  # the booking dialog's texts
    BILLING_NOTICE = "billing_notice"  # to the owner: texting turned off, a payment failed (never gated by billing)
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
    PAUSED_TOO_LONG = "paused_too_long"  # waited longer than PAUSE_MAX_AGE_MINUTES when sending resumed
    NOT_ENTITLED = "not_entitled"  # billing: the tenant's texting is off (no subscription, payment overdue)


class CircuitCause(StrEnum):
    """Why the sending circuit is open (`sms_sending_state.circuit_cause`)."""

    ACCOUNT = "account"  # Twilio refused our credentials or account: a human must act
    UNAVAILABLE = "unavailable"  # a run of 5xx/timeouts: Twilio is down; the probe finds it back


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
TO_IS_LANDLINE = 21635  # "'To' number cannot be a landline" (countries where Twilio does not try): mark it too
LANDLINE_CODES = frozenset({UNREACHABLE_LANDLINE, TO_IS_LANDLINE})

# Refusals about the recipient: final for this text (the message `failed` with its code, the event
# settled). Retrying or replaying cannot help; the next text to that number is decided afresh.
RECIPIENT_REFUSALS = frozenset(
    {
        21211,  # invalid 'To' number
        21408,  # SMS to the recipient's region not enabled
        21608,  # unverified 'To' number (trial account)
        UNSUBSCRIBED,
        21612,  # 'To' not reachable by SMS (unroutable)
        21614,  # 'To' is not a mobile number
        TO_IS_LANDLINE,
        30003,  # unreachable handset
        30004,  # blocked by the recipient
        30005,  # unknown or inactive number
        UNREACHABLE_LANDLINE,
    }
)
# Refusals of our credentials or account: not the text's fault, and every text would get the same
# answer. Any 401 or 403 counts as one too. They open the sending circuit (`circuit.py`).
ACCOUNT_REFUSALS = frozenset(
    {
        10001,  # account not active (disabled: funds, terms of service)
        20003,  # authentication failed / permission denied
        20005,  # account not active (out of funds, trial not activated)
        20006,  # access denied
        20008,  # test credentials used for a live resource
        20403,  # account suspended or closed
    }
)
RATE_LIMITED_STATUS = 429  # Twilio's 20429: never processed, safe to retry after `Retry-After`

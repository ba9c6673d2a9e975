"""The sending pipeline: one decision and one send-and-record step for every text.

`decide` (pure) says send, wait until, or suppress with a reason; `send_and_record` sends a text
committed as `sending` exactly once (a Messages-list lookup after an unknown outcome) and records
the outcome with the caller's statements. Also here: the SMS clients (Twilio or console), line
types of numbers (`conv_phone_facts`) and quiet hours. The module owns no message rows: the caller
(conversations) does.
"""

from nmc.messaging.decision import (
    PAUSE_RECHECK,
    PAUSED_REASON,
    QUIET_HOURS_REASON,
    Send,
    SendFacts,
    Suppress,
    Verdict,
    Wait,
    decide,
)
from nmc.messaging.lines import LANDLINE_SQL, ensure_line_type, mark_line_type
from nmc.messaging.sending import Outgoing, send_and_record
from nmc.messaging.sms import Accepted, SmsOutcomeUnknown, SmsRejected, SmsSender, use_sms_clients
from nmc.messaging.vocabulary import (
    DONE_STATUSES,
    UNREACHABLE_LANDLINE,
    UNSUBSCRIBED,
    LineType,
    MessageKind,
    MessageStatus,
    QuietHoursPolicy,
    SuppressedReason,
)

__all__ = [
    "DONE_STATUSES",
    "LANDLINE_SQL",
    "PAUSED_REASON",
    "PAUSE_RECHECK",
    "QUIET_HOURS_REASON",
    "UNREACHABLE_LANDLINE",
    "UNSUBSCRIBED",
    "Accepted",
    "LineType",
    "MessageKind",
    "MessageStatus",
    "Outgoing",
    "QuietHoursPolicy",
    "Send",
    "SendFacts",
    "SmsOutcomeUnknown",
    "SmsRejected",
    "SmsSender",
    "Suppress",
    "SuppressedReason",
    "Verdict",
    "Wait",
    "decide",
    "ensure_line_type",
    "mark_line_type",
    "send_and_record",
    "use_sms_clients",
]

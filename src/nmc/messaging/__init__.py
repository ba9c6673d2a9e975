"""The sending pipeline: one decision and one send-and-record step for every text.

`decide` (pure) says send, wait until, probe, or suppress with a reason; `send_and_record` sends a
text committed as `sending` exactly once (a Messages-list lookup after an unknown outcome) and
records the outcome with the caller's statements, by whose fault a refusal is: the recipient's
(final), ours (the sending circuit opens for everyone, `sms_sending_state`), a rate limit (wait and
retry) or unknown (parked). Also here: the SMS clients (Twilio or console), line types of numbers
(`conv_phone_facts`) and quiet hours. The module owns no message rows: the caller (conversations) does.
"""

from nmc.messaging import metrics as _sending_circuit_probe  # noqa: F401  (registers the /metrics probe)
from nmc.messaging.circuit import CIRCUIT_SQL, PROBE_INTERVAL, claim_probe
from nmc.messaging.decision import (
    CIRCUIT_REASON,
    PAUSE_RECHECK,
    PAUSED_REASON,
    QUIET_HOURS_REASON,
    Probe,
    Send,
    SendFacts,
    Suppress,
    Verdict,
    Wait,
    decide,
)
from nmc.messaging.lines import LANDLINE_SQL, ensure_line_type, mark_line_type
from nmc.messaging.pause import PAUSE_SQL, SendingState, pause_sending, resume_sending, sending_state
from nmc.messaging.sending import RATE_LIMITED_REASON, Outgoing, send_and_record
from nmc.messaging.sms import (
    Accepted,
    SmsAccountRefused,
    SmsOutcomeUnknown,
    SmsRateLimited,
    SmsRecipientRefused,
    SmsRejected,
    SmsSender,
    use_sms_clients,
)
from nmc.messaging.vocabulary import (
    DONE_STATUSES,
    RECIPIENT_REFUSALS,
    UNREACHABLE_LANDLINE,
    UNSUBSCRIBED,
    LineType,
    MessageKind,
    MessageStatus,
    QuietHoursPolicy,
    SuppressedReason,
)

__all__ = [
    "CIRCUIT_REASON",
    "CIRCUIT_SQL",
    "DONE_STATUSES",
    "LANDLINE_SQL",
    "PAUSED_REASON",
    "PAUSE_RECHECK",
    "PAUSE_SQL",
    "PROBE_INTERVAL",
    "QUIET_HOURS_REASON",
    "RATE_LIMITED_REASON",
    "RECIPIENT_REFUSALS",
    "UNREACHABLE_LANDLINE",
    "UNSUBSCRIBED",
    "Accepted",
    "LineType",
    "MessageKind",
    "MessageStatus",
    "Outgoing",
    "Probe",
    "QuietHoursPolicy",
    "Send",
    "SendFacts",
    "SendingState",
    "SmsAccountRefused",
    "SmsOutcomeUnknown",
    "SmsRateLimited",
    "SmsRecipientRefused",
    "SmsRejected",
    "SmsSender",
    "Suppress",
    "SuppressedReason",
    "Verdict",
    "Wait",
    "claim_probe",
    "decide",
    "ensure_line_type",
    "mark_line_type",
    "pause_sending",
    "resume_sending",
    "send_and_record",
    "sending_state",
    "use_sms_clients",
]

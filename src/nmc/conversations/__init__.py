"""Conversations: a caller's threads with a business, their texts, opt-outs, the first SMS after a
missed call, every other text's planning, follow-ups, owner alerts, messaging settings and the inbox.

The sending itself (the decision and the exactly-once Messages request) is `nmc.messaging`'s.
"""

from nmc.conversations import metrics as _first_sms_latency_probe  # noqa: F401  (registers the /metrics probe)
from nmc.conversations.controllers import MessagingSettingsController, ThreadController
from nmc.conversations.follow_up import queue_due_follow_ups
from nmc.conversations.inbound import InboundSms, Media, apply_inbound
from nmc.conversations.models import ThreadStatus
from nmc.conversations.onboarding import messaging_settings_saved
from nmc.conversations.optouts import OPTED_OUT_SQL, CallerAction
from nmc.conversations.outbound import queue_text
from nmc.conversations.owner_texts import queue_owner_text
from nmc.conversations.paused import PausedTexts, paused_texts, suppress_stale_paused
from nmc.conversations.reopen import TextsReplay, reopen_unsent_texts
from nmc.conversations.service import FirstSmsOutcome, first_sms_outcome, update_delivery_status
from nmc.conversations.templates import DEFAULT_BOOKING_PROMPT
from nmc.conversations.threads import CallerText, ThreadFacts, caller_text, thread_facts

__all__ = [
    "DEFAULT_BOOKING_PROMPT",
    "OPTED_OUT_SQL",
    "CallerAction",
    "CallerText",
    "FirstSmsOutcome",
    "InboundSms",
    "Media",
    "MessagingSettingsController",
    "PausedTexts",
    "TextsReplay",
    "ThreadController",
    "ThreadFacts",
    "ThreadStatus",
    "apply_inbound",
    "caller_text",
    "first_sms_outcome",
    "messaging_settings_saved",
    "paused_texts",
    "queue_due_follow_ups",
    "queue_owner_text",
    "queue_text",
    "reopen_unsent_texts",
    "suppress_stale_paused",
    "thread_facts",
    "update_delivery_status",
]

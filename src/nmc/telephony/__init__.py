"""Telephony: Twilio's voice and SMS callbacks (through the webhook pipeline), the missed-call rules,
TwiML, `nmc simulate` (the signed synthetic missed call), and self-serve numbers and onboarding (issue
#15: `/api/numbers`, `/api/onboarding`, `nmc numbers sync-webhooks`)."""

from nmc.telephony.api import NUMBER_CONTROLLERS
from nmc.telephony.controllers import TwilioWebhooks
from nmc.telephony.numbers import WebhookSync, sync_webhooks
from nmc.telephony.simulate import (
    SimulationResult,
    dial_outcome_params,
    new_call_sid,
    signed_headers,
    simulate_missed_call,
)
from nmc.telephony.webhooks import TWILIO_WEBHOOKS

__all__ = [
    "NUMBER_CONTROLLERS",
    "TWILIO_WEBHOOKS",
    "SimulationResult",
    "TwilioWebhooks",
    "WebhookSync",
    "dial_outcome_params",
    "new_call_sid",
    "signed_headers",
    "simulate_missed_call",
    "sync_webhooks",
]

"""Telephony: Twilio's voice and SMS callbacks (through the webhook pipeline), the missed-call rules,
TwiML, and `nmc simulate` (the signed synthetic missed call)."""

from nmc.telephony.controllers import TwilioWebhooks
from nmc.telephony.simulate import (
    SimulationResult,
    dial_outcome_params,
    new_call_sid,
    signed_headers,
    simulate_missed_call,
)
from nmc.telephony.webhooks import TWILIO_WEBHOOKS

__all__ = [
    "TWILIO_WEBHOOKS",
    "SimulationResult",
    "TwilioWebhooks",
    "dial_outcome_params",
    "new_call_sid",
    "signed_headers",
    "simulate_missed_call",
]

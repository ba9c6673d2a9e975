"""Telephony: Twilio's voice and SMS callbacks (through the webhook pipeline), the missed-call rules,
TwiML, and `nmc simulate` (the signed synthetic missed call)."""

from nmc.telephony.controllers import TwilioWebhooks
from nmc.telephony.webhooks import TWILIO_WEBHOOKS

__all__ = ["TWILIO_WEBHOOKS", "TwilioWebhooks"]

"""The webhook pipeline every provider's deliveries go through (see `pipeline.py`)."""

from nmc.webhooks.ledger import Answer
from nmc.webhooks.pipeline import (
    RawDelivery,
    ReplayRefused,
    Unrouted,
    WebhookHandler,
    WebhookProvider,
    WebhookRefused,
    receive,
    replay,
)
from nmc.webhooks.twilio import TWILIO, twiml_answer

__all__ = [
    "TWILIO",
    "Answer",
    "RawDelivery",
    "ReplayRefused",
    "Unrouted",
    "WebhookHandler",
    "WebhookProvider",
    "WebhookRefused",
    "receive",
    "replay",
    "twiml_answer",
]

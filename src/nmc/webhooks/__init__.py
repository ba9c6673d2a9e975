"""The webhook pipeline every provider's deliveries go through (see `pipeline.py`)."""

from nmc.webhooks.clerk import CLERK, clerk_answer
from nmc.webhooks.fetched import ingest_fetched
from nmc.webhooks.ledger import Answer
from nmc.webhooks.pipeline import (
    Applied,
    RawDelivery,
    ReplayRefused,
    Unrouted,
    WebhookHandler,
    WebhookProvider,
    WebhookRefused,
    json_object,
    receive,
    replay,
)
from nmc.webhooks.stripe import STRIPE, json_answer
from nmc.webhooks.twilio import TWILIO, twiml_answer

__all__ = [
    "CLERK",
    "STRIPE",
    "TWILIO",
    "Answer",
    "Applied",
    "RawDelivery",
    "ReplayRefused",
    "Unrouted",
    "WebhookHandler",
    "WebhookProvider",
    "WebhookRefused",
    "clerk_answer",
    "ingest_fetched",
    "json_answer",
    "json_object",
    "receive",
    "replay",
    "twiml_answer",
]

"""Twilio as a webhook provider: `X-Twilio-Signature` checked with twilio's own RequestValidator
against `PUBLIC_BASE_URL` + path, form-encoded bodies, `I-Twilio-Idempotency-Token` as a second key."""

from __future__ import annotations

from typing import Any

from twilio.request_validator import RequestValidator

from nmc.settings import get_settings
from nmc.webhooks.ledger import Answer
from nmc.webhooks.pipeline import RawDelivery, WebhookRefused

SIGNATURE_HEADER = "x-twilio-signature"
IDEMPOTENCY_HEADER = "i-twilio-idempotency-token"
XML = "application/xml"


class TwilioProvider:
    name = "twilio"
    idempotency_header = "I-Twilio-Idempotency-Token"
    # Twilio's own callbacks are a few KB; an SMS body is at most 1,600 characters.
    max_body_bytes = 64 * 1024

    def verify(self, delivery: RawDelivery) -> WebhookRefused | None:
        """Signed with the auth token, or during a rotation with the previous one
        (`TWILIO_AUTH_TOKEN_PREVIOUS`, docs/oncall.md "Secret rotation")."""
        signature = delivery.headers.get(SIGNATURE_HEADER, "")
        if signature:
            settings = get_settings()
            fields = delivery.form
            tokens = [settings.TWILIO_AUTH_TOKEN]
            if settings.TWILIO_AUTH_TOKEN_PREVIOUS:
                tokens.append(settings.TWILIO_AUTH_TOKEN_PREVIOUS)
            if any(RequestValidator(token).validate(delivery.url, fields, signature) for token in tokens):
                return None
        return WebhookRefused(403, "Invalid Twilio signature")

    def decode(self, delivery: RawDelivery) -> dict[str, Any]:
        return dict(delivery.form)

    def idempotency_token(self, delivery: RawDelivery) -> str | None:
        return delivery.headers.get(IDEMPOTENCY_HEADER) or None


TWILIO = TwilioProvider()


def twiml_answer(body: str) -> Answer:
    return Answer(status=200, body=body, media_type=XML)

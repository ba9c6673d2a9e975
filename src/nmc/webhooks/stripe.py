"""Stripe as a webhook provider: `Stripe-Signature` checked with the stripe SDK (`WebhookSignature`,
the scheme `Webhook.construct_event` uses: HMAC-SHA256 of `{t}.{raw body}`, 300 s tolerance) over the
raw bytes, JSON bodies. `STRIPE_WEBHOOK_SECRET` may hold two secrets, comma-separated, while the
endpoint's secret is rotated (runbook §7.5): a delivery signed with either is accepted."""

from __future__ import annotations

from typing import Any

from stripe import SignatureVerificationError, WebhookSignature

from nmc.settings import get_settings
from nmc.webhooks.ledger import Answer
from nmc.webhooks.pipeline import RawDelivery, WebhookRefused, json_object

SIGNATURE_HEADER = "stripe-signature"
TOLERANCE_SECONDS = 300
JSON = "application/json"


def webhook_secrets() -> list[str]:
    return [secret.strip() for secret in get_settings().STRIPE_WEBHOOK_SECRET.split(",") if secret.strip()]


class StripeProvider:
    name = "stripe"
    idempotency_header = "Stripe-Signature"  # Stripe sends no retry token: the event id is the key
    # Stripe's events carry one object (a subscription, an invoice with its lines): tens of KB at most.
    max_body_bytes = 256 * 1024

    def verify(self, delivery: RawDelivery) -> WebhookRefused | None:
        header = delivery.headers.get(SIGNATURE_HEADER, "")
        secrets = webhook_secrets()
        if header and secrets:
            try:
                payload = delivery.body.decode("utf-8")
            except UnicodeDecodeError:
                return WebhookRefused(400, "Stripe webhook body is not UTF-8")
            for secret in secrets:
                try:
                    WebhookSignature.verify_header(payload, header, secret, TOLERANCE_SECONDS)
                except SignatureVerificationError:
                    continue
                return None
        return WebhookRefused(400, "Invalid Stripe signature")

    def decode(self, delivery: RawDelivery) -> dict[str, Any]:
        return json_object(delivery.body)

    def idempotency_token(self, delivery: RawDelivery) -> str | None:
        return None


STRIPE = StripeProvider()


def json_answer(body: str, status: int = 200) -> Answer:
    return Answer(status=status, body=body, media_type=JSON)

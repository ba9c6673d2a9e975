"""Clerk as a webhook provider. Clerk sends its webhooks through Svix: `svix-id`, `svix-timestamp` and
`svix-signature` (`v1,<base64>` entries, space-separated) over `{id}.{timestamp}.{raw body}`, checked
with the `svix` library (`Webhook(secret).verify`, five minutes' tolerance) against the raw bytes.
`CLERK_WEBHOOK_SECRET` may hold two `whsec_...` secrets, comma-separated, while the endpoint's secret
is rotated: a delivery signed with either is accepted.

The body is a JSON event (`{"type", "data", "object": "event", "timestamp", ...}`). It names no
delivery id of its own, so `decode` adds the `svix-id` as `svix_id`: the ledger keys the delivery by
it (`event:<svix-id>`) and keeps it with the stored payload for a replay; it is also the idempotency
token (a second key)."""

from __future__ import annotations

from typing import Any

import structlog
from svix.webhooks import Webhook, WebhookVerificationError

from nmc.settings import get_settings
from nmc.webhooks.ledger import Answer
from nmc.webhooks.pipeline import RawDelivery, WebhookRefused, json_object

ID_HEADER = "svix-id"
TIMESTAMP_HEADER = "svix-timestamp"
SIGNATURE_HEADER = "svix-signature"
DELIVERY_ID_FIELD = "svix_id"
JSON = "application/json"

log = structlog.get_logger(module="webhooks")


def clerk_webhook_secrets() -> list[str]:
    return [secret.strip() for secret in get_settings().CLERK_WEBHOOK_SECRET.split(",") if secret.strip()]


class ClerkProvider:
    name = "clerk"
    idempotency_header = "svix-id"
    # An organisation or a membership (with its organisation and the member's public data): a few KB.
    max_body_bytes = 256 * 1024

    def verify(self, delivery: RawDelivery) -> WebhookRefused | None:
        headers = {name: delivery.headers.get(name, "") for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)}
        if all(headers.values()):
            for secret in clerk_webhook_secrets():
                try:
                    verifier = Webhook(secret)
                except Exception as exc:  # not base64, or nothing after `whsec_`: our configuration's fault
                    log.error("clerk.webhook_secret_unusable", error=type(exc).__name__)
                    continue
                try:
                    verifier.verify(delivery.body, headers)
                except (WebhookVerificationError, ValueError):
                    # ValueError: a malformed signature entry, or a body that is not UTF-8
                    # (binascii.Error and UnicodeDecodeError are ValueErrors): not authentic either.
                    continue
                return None
        return WebhookRefused(400, "Invalid Clerk (Svix) signature")

    def decode(self, delivery: RawDelivery) -> dict[str, Any]:
        return {**json_object(delivery.body), DELIVERY_ID_FIELD: delivery.headers.get(ID_HEADER, "")}

    def idempotency_token(self, delivery: RawDelivery) -> str | None:
        return delivery.headers.get(ID_HEADER) or None


CLERK = ClerkProvider()


def clerk_answer(body: str = '{"received":true}') -> Answer:
    return Answer(status=200, body=body, media_type=JSON)

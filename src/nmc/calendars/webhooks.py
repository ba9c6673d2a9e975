"""Google Calendar push notifications through the shared webhook pipeline.

Google POSTs an empty body with `X-Goog-*` headers. The provider verifies `X-Goog-Channel-Token`
against the token this deployment derives from `X-Goog-Channel-ID` (SECRET_KEY, or the previous key
during a rotation): an unknown channel or a wrong token is a 401, counted in
`webhook_signature_failures_total{provider="google"}` and logged with header names only. The handler
routes the channel to its connection (a stopped or expired channel, or one whose resource id does not
match, is answered and ignored), keys the delivery by channel + message number (Google's retries are
deduplicated by the ledger), acknowledges the `sync` handshake, and for a change marks the connection
and queues an incremental sync in the jobs process unless one is waiting already (bursts coalesce).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.calendars import keys, store
from nmc.calendars.models import ConnectionStatus
from nmc.calendars.queueing import queue_item_sync, queue_sync
from nmc.calendars.schemas import GoogleNotification, JobberWebhook
from nmc.calendars.sync import needs_reauth_on
from nmc.db import raw_connection
from nmc.settings import get_settings
from nmc.webhooks import Answer, RawDelivery, Unrouted, WebhookHandler, WebhookRefused, json_object

log = structlog.get_logger(module="calendars")

CHANNEL_ID = "x-goog-channel-id"
CHANNEL_TOKEN = "x-goog-channel-token"  # noqa: S105 (a header name)
HEADERS = {
    "channel_id": CHANNEL_ID,
    "message_number": "x-goog-message-number",
    "resource_id": "x-goog-resource-id",
    "resource_state": "x-goog-resource-state",
    "resource_uri": "x-goog-resource-uri",
    "channel_expiration": "x-goog-channel-expiration",
}
OK = Answer(status=200, body="", media_type="text/plain")


class GoogleCalendarProvider:
    name = "google"
    idempotency_header = "X-Goog-Message-Number"
    max_body_bytes = 16 * 1024  # notifications have no body

    def verify(self, delivery: RawDelivery) -> WebhookRefused | None:
        channel_id = delivery.headers.get(CHANNEL_ID, "")
        token = delivery.headers.get(CHANNEL_TOKEN, "")
        if channel_id and token and len(channel_id) <= 64 and keys.channel_token_valid(channel_id, token):
            return None
        return WebhookRefused(401, "Unknown channel or wrong X-Goog-Channel-Token")

    def decode(self, delivery: RawDelivery) -> dict[str, Any]:
        return {field: delivery.headers[header] for field, header in HEADERS.items() if header in delivery.headers}

    def idempotency_token(self, delivery: RawDelivery) -> str | None:
        return None  # the message number is unique per channel only: it is part of the key


GOOGLE_PUSH = GoogleCalendarProvider()


@dataclass(frozen=True)
class ChannelContext:
    connection_id: UUID
    tenant_id: UUID


class CalendarNotification(WebhookHandler[GoogleNotification, ChannelContext]):
    provider = GOOGLE_PUSH
    kind = "calendar.notification"
    payload_type = GoogleNotification

    def key(self, payload: GoogleNotification) -> str:
        return f"{payload.channel_id}:{payload.message_number}"

    async def route(self, session: AsyncSession, payload: GoogleNotification) -> ChannelContext:
        channel = await store.live_channel(await raw_connection(session), payload.channel_id)
        if channel is None or (
            channel.resource_id and payload.resource_id and channel.resource_id != payload.resource_id
        ):
            # Ours once (the token says so) but stopped, expired or disconnected since: 200, so Google stops.
            raise Unrouted(OK)
        return ChannelContext(channel.connection_id, channel.tenant_id)

    def tenant_id(self, context: ChannelContext | None) -> UUID | None:
        return context.tenant_id if context else None

    def answer(self, payload: GoogleNotification, context: ChannelContext | None) -> Answer:
        return OK

    async def apply(
        self, session: AsyncSession, payload: GoogleNotification, context: ChannelContext | None, _: datetime
    ) -> None:
        assert context is not None
        if payload.resource_state == "sync":  # the handshake after a watch: nothing changed yet
            return
        if await store.request_sync(await raw_connection(session), context.connection_id):
            await queue_sync(context.connection_id)
            log.info("calendars.change_notified", connection_id=str(context.connection_id))


CALENDAR_NOTIFICATION = CalendarNotification()
GOOGLE_WEBHOOKS: dict[tuple[str, str], WebhookHandler[Any, Any]] = {
    (CALENDAR_NOTIFICATION.provider.name, CALENDAR_NOTIFICATION.kind): CALENDAR_NOTIFICATION
}


# ---------------------------------------------------------------------------- Jobber (ADR 0016)
JOBBER_SIGNATURE = "x-jobber-hmac-sha256"
VISIT_TOPICS = frozenset({"VISIT_CREATE", "VISIT_UPDATE", "VISIT_DESTROY", "VISIT_COMPLETE"})
DISCONNECT_TOPIC = "APP_DISCONNECT"


def jobber_signature(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(raw body, the app's client secret))."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class JobberWebhookProvider:
    """Jobber's app-wide webhooks: `X-Jobber-Hmac-SHA256` over the raw body with JOBBER_CLIENT_SECRET (a
    wrong or missing one: 401 and `webhook_signature_failures_total{provider="jobber"}`), JSON bodies."""

    name = "jobber"
    idempotency_header = JOBBER_SIGNATURE  # Jobber sends no retry token: topic + item + time is the key
    max_body_bytes = 64 * 1024  # ids only

    def verify(self, delivery: RawDelivery) -> WebhookRefused | None:
        secret = get_settings().JOBBER_CLIENT_SECRET
        presented = delivery.headers.get(JOBBER_SIGNATURE, "")
        if secret and presented and hmac.compare_digest(jobber_signature(delivery.body, secret), presented):
            return None
        return WebhookRefused(401, "Invalid X-Jobber-Hmac-SHA256")

    def decode(self, delivery: RawDelivery) -> dict[str, Any]:
        return json_object(delivery.body)

    def idempotency_token(self, delivery: RawDelivery) -> str | None:
        return None


JOBBER_PUSH = JobberWebhookProvider()


class JobberEventHandler(WebhookHandler[JobberWebhook, ChannelContext]):
    """Routed by the account id; a visit topic queues the visit's re-query in the jobs process (never a
    Jobber request here: the answer must leave within a second); APP_DISCONNECT → needs_reauth (the
    owner told once, polling stops). Other topics, or an account not connected here: 200, ignored."""

    provider = JOBBER_PUSH
    kind = "jobber.event"
    payload_type = JobberWebhook

    def key(self, payload: JobberWebhook) -> str:
        event = payload.data.webHookEvent
        return f"{event.topic}:{event.itemId}:{event.occurred_at}"

    async def route(self, session: AsyncSession, payload: JobberWebhook) -> ChannelContext:
        event = payload.data.webHookEvent
        if event.topic not in VISIT_TOPICS and event.topic != DISCONNECT_TOPIC:
            raise Unrouted(OK)
        row = await store.jobber_of_account(await raw_connection(session), event.accountId)
        if row is None:
            raise Unrouted(OK)
        return ChannelContext(row.id, row.tenant_id)

    def tenant_id(self, context: ChannelContext | None) -> UUID | None:
        return context.tenant_id if context else None

    def answer(self, payload: JobberWebhook, context: ChannelContext | None) -> Answer:
        return OK

    async def apply(
        self, session: AsyncSession, payload: JobberWebhook, context: ChannelContext | None, _: datetime
    ) -> None:
        assert context is not None
        event = payload.data.webHookEvent
        connection = await raw_connection(session)
        if event.topic == DISCONNECT_TOPIC:
            await _disconnected(connection, context)
            return
        row = await store.get(connection, context.connection_id)
        if row is None or row.status != ConnectionStatus.ACTIVE or not event.itemId:
            return
        await queue_item_sync(context.connection_id, event.itemId)
        log.info("calendars.jobber_visit_notified", connection_id=str(context.connection_id), topic=event.topic)


async def _disconnected(connection: asyncpg.Connection, context: ChannelContext) -> None:
    """The app was removed in Jobber (its tokens are invalid already): needs_reauth, told once."""
    row = await store.get(connection, context.connection_id)
    if row is None or row.status == ConnectionStatus.NEEDS_REAUTH:
        return
    await needs_reauth_on(connection, row, "APP_DISCONNECT: the app was disconnected in Jobber")
    log.warning("calendars.needs_reauth", connection_id=str(row.id), provider=row.provider, error="APP_DISCONNECT")


JOBBER_EVENT = JobberEventHandler()
JOBBER_WEBHOOKS: dict[tuple[str, str], WebhookHandler[Any, Any]] = {
    (JOBBER_EVENT.provider.name, JOBBER_EVENT.kind): JOBBER_EVENT
}

"""`POST /webhooks/stripe` as one handler of the shared pipeline (`nmc.webhooks.receive`): every Stripe
event is one kind of delivery, keyed by its event id (a redelivery gets the first answer and
`webhook_dedupe_hits_total{provider="stripe"}`), routed to the tenant whose customer it concerns.

Events billing does not handle, and events about customers we do not know, are answered 200 and not
stored (Stripe stops retrying them); what an event changes is `service.apply_event`'s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.billing.service import HANDLED_EVENTS, StripeEventFacts, apply_event, tenant_of
from nmc.db import raw_connection
from nmc.webhooks import STRIPE, Answer, Unrouted, WebhookHandler, json_answer, receive

log = structlog.get_logger(module="billing")

RECEIVED = json_answer('{"received":true}')
IGNORED = json_answer('{"received":true,"ignored":true}')
# Stripe's ids are short ("evt_" + 24 characters); the ledger keeps `event:<id>` in 255.
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class EventData(msgspec.Struct):
    object: dict[str, Any]


class StripeEventPayload(msgspec.Struct):
    """A Stripe event as delivered (a snapshot event); fields billing does not read are ignored."""

    id: EventId
    type: str
    created: int
    data: EventData
    livemode: bool = False

    def facts(self) -> StripeEventFacts:
        return StripeEventFacts(
            id=self.id, type=self.type, created=datetime.fromtimestamp(self.created, UTC), object=self.data.object
        )


class StripeEvent(WebhookHandler[StripeEventPayload, UUID]):
    provider = STRIPE
    kind = "event"
    payload_type = StripeEventPayload

    def key(self, payload: StripeEventPayload) -> str:
        return payload.id

    async def route(self, session: AsyncSession, payload: StripeEventPayload) -> UUID:
        if payload.type not in HANDLED_EVENTS:
            raise Unrouted(IGNORED)
        tenant_id = await tenant_of(await raw_connection(session), payload.data.object)
        if tenant_id is None:
            log.warning("billing.event_for_unknown_customer", event_type=payload.type, stripe_event=payload.id)
            raise Unrouted(IGNORED)
        return tenant_id

    def tenant_id(self, context: UUID | None) -> UUID | None:
        return context

    def answer(self, payload: StripeEventPayload, context: UUID | None) -> Answer:
        return RECEIVED

    async def apply(
        self, session: AsyncSession, payload: StripeEventPayload, context: UUID | None, _: datetime
    ) -> None:
        assert context is not None
        await apply_event(await raw_connection(session), context, payload.facts())


STRIPE_EVENT = StripeEvent()
# For `just replay-webhook` (handlers by provider and kind).
STRIPE_WEBHOOKS: dict[tuple[str, str], WebhookHandler[Any, Any]] = {(STRIPE.name, STRIPE_EVENT.kind): STRIPE_EVENT}


class StripeWebhooks(Controller):
    path = "/webhooks/stripe"
    tags = ["Webhooks"]
    include_in_schema = False

    @post("/", request_max_body_size=STRIPE.max_body_bytes)
    async def stripe_event(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await receive(STRIPE_EVENT, request, db_session)

"""`POST /webhooks/clerk` as one handler of the shared pipeline (`nmc.webhooks.receive`).

Every Clerk event is one kind of delivery (`event`), keyed by its `svix-id` (a redelivery gets the
first answer and `webhook_dedupe_hits_total{provider="clerk"}`); a bad signature is a 400 counted in
`webhook_signature_failures_total{provider="clerk"}`. Organisation and membership events change
tenants and users (`identity/clerk.py`, whatever their order); other event types (`user.*`,
`session.*`, ...) are answered 200 and not stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import raw_connection
from nmc.identity.clerk import (
    MembershipState,
    OrganizationState,
    apply_membership,
    apply_organization,
    clerk_time,
    deactivate_organization,
    remove_membership,
    tenant_of_org,
)
from nmc.webhooks import CLERK, Answer, Unrouted, WebhookHandler, clerk_answer, receive

log = structlog.get_logger(module="identity")

RECEIVED = clerk_answer()
IGNORED = clerk_answer('{"received":true,"ignored":true}')
ORGANIZATION_EVENTS = frozenset({"organization.created", "organization.updated", "organization.deleted"})
MEMBERSHIP_EVENTS = frozenset(
    {"organizationMembership.created", "organizationMembership.updated", "organizationMembership.deleted"}
)
# Clerk's ids (`org_…`, `user_…`, `orgmem_…`) are ~30 characters; the columns hold 64.
ClerkId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# The ledger keeps `event:<svix-id>` in 255 characters (Svix ids are `msg_` + 27).
SvixId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]  # up to 9999-12-31


class ClerkEventPayload(msgspec.Struct):
    """A Clerk event as delivered, plus the `svix-id` it came with (see `nmc.webhooks.clerk`)."""

    svix_id: SvixId
    type: Annotated[str, msgspec.Meta(max_length=100)]
    data: dict[str, Any]
    timestamp: Millis | None = None  # when the event happened (ms); not in every payload (unconfirmed)


class ClerkOrganization(msgspec.Struct):
    id: ClerkId
    name: str | None = None
    slug: str | None = None
    updated_at: Millis | None = None
    created_at: Millis | None = None
    deleted: bool = False


class ClerkPublicUserData(msgspec.Struct):
    user_id: ClerkId
    identifier: Annotated[str, msgspec.Meta(max_length=320)] | None = None


class ClerkMembership(msgspec.Struct):
    id: ClerkId
    organization: ClerkOrganization
    public_user_data: ClerkPublicUserData
    role: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    updated_at: Millis | None = None
    created_at: Millis | None = None


ClerkChange = ClerkOrganization | ClerkMembership


def _typed(payload: ClerkEventPayload, kind: type[Any]) -> Any:
    try:
        return msgspec.convert(payload.data, kind, strict=False)
    except msgspec.ValidationError as exc:
        where = str(exc).rpartition("at `$")[2].rstrip("`") or ""
        field = f"data{where}"
        log.info("webhook.malformed", provider="clerk", kind="event", field=field, error=str(exc), http_status=400)
        raise ValidationException(
            f"Malformed Clerk {payload.type} webhook: {field}: {exc}", extra={"field": field}
        ) from None


def _organization(org: ClerkOrganization) -> OrganizationState:
    return OrganizationState(org.id, org.name or org.slug, clerk_time(org.updated_at or org.created_at))


def _membership(membership: ClerkMembership) -> MembershipState:
    return MembershipState(
        org=_organization(membership.organization),
        membership_id=membership.id,
        user_id=membership.public_user_data.user_id,
        clerk_role=membership.role,
        identifier=membership.public_user_data.identifier,
        version=clerk_time(membership.updated_at or membership.created_at),
    )


class ClerkEvent(WebhookHandler[ClerkEventPayload, tuple[ClerkChange, UUID | None]]):
    provider = CLERK
    kind = "event"
    payload_type = ClerkEventPayload

    def key(self, payload: ClerkEventPayload) -> str:
        return payload.svix_id

    async def route(self, session: AsyncSession, payload: ClerkEventPayload) -> tuple[ClerkChange, UUID | None]:
        change: ClerkChange
        if payload.type in ORGANIZATION_EVENTS:
            organization: ClerkOrganization = _typed(payload, ClerkOrganization)
            change, org_id = organization, organization.id
        elif payload.type in MEMBERSHIP_EVENTS:
            membership: ClerkMembership = _typed(payload, ClerkMembership)
            change, org_id = membership, membership.organization.id
        else:
            raise Unrouted(IGNORED)
        return change, await tenant_of_org(await raw_connection(session), org_id)

    def tenant_id(self, context: tuple[ClerkChange, UUID | None] | None) -> UUID | None:
        return context[1] if context else None

    def answer(self, payload: ClerkEventPayload, context: tuple[ClerkChange, UUID | None] | None) -> Answer:
        return RECEIVED

    async def apply(
        self,
        session: AsyncSession,
        payload: ClerkEventPayload,
        context: tuple[ClerkChange, UUID | None] | None,
        received_at: datetime,
    ) -> None:
        assert context is not None
        change = context[0]
        connection = await raw_connection(session)
        happened_at = clerk_time(payload.timestamp) or received_at.astimezone(UTC)
        if isinstance(change, ClerkOrganization):
            if payload.type == "organization.deleted" or change.deleted:
                await deactivate_organization(connection, change.id, happened_at)
            else:
                await apply_organization(connection, _organization(change))
        elif payload.type == "organizationMembership.deleted":
            await remove_membership(connection, _membership(change), happened_at)
        else:
            await apply_membership(connection, _membership(change))
        log.info("clerk.event_applied", event_type=payload.type)


CLERK_EVENT = ClerkEvent()
# For `just replay-webhook` (handlers by provider and kind).
CLERK_WEBHOOKS: dict[tuple[str, str], WebhookHandler[Any, Any]] = {(CLERK.name, CLERK_EVENT.kind): CLERK_EVENT}


class ClerkWebhooks(Controller):
    path = "/webhooks/clerk"
    tags = ["Webhooks"]
    include_in_schema = False

    @post("/", request_max_body_size=CLERK.max_body_bytes)
    async def clerk_event(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await receive(CLERK_EVENT, request, db_session)

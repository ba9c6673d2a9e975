"""`GET /api/billing`, `POST /api/billing/checkout`, `POST /api/billing/portal`, scoped by the caller's tenant."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.billing.account import billing_state, open_portal, start_checkout
from nmc.billing.schemas import BillingRead, CheckoutCreate, UrlRead
from nmc.db import raw_connection
from nmc.identity import Principal


class BillingController(Controller):
    path = "/billing"
    tags = ["Billing"]

    @get(
        summary="Subscription, texting entitlement and this period's usage",
        description="The plan and Stripe subscription status, the current period's end, the trial's end, whether "
        "texting is enabled and why (`texting_reason`; off: texts are suppressed with `not_entitled`), and the "
        "texts Twilio accepted this period with their SMS segments, from our own records.",
    )
    async def read_billing(
        self, request: Request[Principal, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> BillingRead:
        return await billing_state(await raw_connection(db_session), request.user.tenant_id)

    @post(
        "/checkout",
        status_code=200,
        summary="Start a Stripe Checkout to subscribe",
        description="A Checkout Session in subscription mode for the tenant's Stripe customer (created once). "
        "`price` is one of the plans this deployment offers (the base plan by default). A second click within "
        "minutes gets the same session. 409 when the tenant is subscribed already (use the portal) or billing is "
        "not configured here; 503 while Stripe cannot be reached.",
    )
    async def checkout(
        self,
        request: Request[Principal, Any, Any],
        db_session: NamedDependency[AsyncSession],
        data: CheckoutCreate | None = None,
    ) -> UrlRead:
        price = data.price if data is not None else None
        return UrlRead(url=await start_checkout(await raw_connection(db_session), request.user.tenant_id, price))

    @post(
        "/portal",
        status_code=200,
        summary="Open the Stripe Customer Portal",
        description="Card, invoices, plan and cancellation in Stripe's portal. 409 before the first checkout.",
    )
    async def portal(self, request: Request[Principal, Any, Any], db_session: NamedDependency[AsyncSession]) -> UrlRead:
        return UrlRead(url=await open_portal(await raw_connection(db_session), request.user.tenant_id))

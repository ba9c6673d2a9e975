"""Deliveries fetched from a provider's API instead of pushed to us (`just billing-reconcile` lists
Stripe's events): the same parse, route, ledger and apply as the pipeline, minus the HTTP request and
its signature (they came from the provider's API over TLS with our key)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from nmc.webhooks.ledger import Delivery, record_first_delivery
from nmc.webhooks.pipeline import Unrouted, WebhookHandler, parse


async def ingest_fetched(
    session: AsyncSession,
    handler: WebhookHandler[Any, Any],
    fields: Mapping[str, Any],
    received_at: datetime | None = None,
) -> bool:
    """Apply a fetched delivery unless the ledger has it already; True when it was applied now.

    An unroutable one is skipped (False), as the pipeline answers it without storing it.
    """
    payload = parse(handler, fields)
    try:
        context = await handler.route(session, payload)
    except Unrouted:
        return False
    first = Delivery(
        provider=handler.provider.name,
        kind=handler.kind,
        external_id=f"{handler.kind}:{handler.key(payload)}",
        payload=dict(fields),
        tenant_id=handler.tenant_id(context),
    )
    if not await record_first_delivery(session, first, handler.answer(payload, context)):
        return False
    await handler.apply(session, payload, context, received_at or datetime.now(UTC))
    return True

"""Billing's reactions to domain events: a new tenant's card-less trial (`tenant.created`)."""

from __future__ import annotations

from nmc.billing.service import start_trial
from nmc.db import hot_transaction
from nmc.events import TenantCreated, subscriber
from nmc.settings import get_settings


async def start_tenant_trial(event: TenantCreated) -> None:
    """`BILLING_TRIAL_DAYS` from the tenant's creation, without a card (idempotent)."""
    if not get_settings().BILLING_ENABLED:
        return
    async with hot_transaction() as connection:
        await start_trial(connection, event.tenant_id, event.occurred_at)


subscriber(TenantCreated)(start_tenant_trial)

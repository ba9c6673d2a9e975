"""Billing's periodic work, run by the jobs process every minute (the worker's cron sends the actor):
record entitlements that lapsed (a grace period or our trial ran out: the owner is told), then report
metered usage to Stripe."""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog

from nmc.billing.service import expire_lapsed
from nmc.billing.usage import report_summary, report_usage
from nmc.observability.correlation import new_correlation_id, use_correlation_id
from nmc.settings import get_settings

log = structlog.get_logger(module="billing")


async def expire_lapsed_entitlements() -> int:
    connection = await asyncpg.connect(get_settings().DATABASE_URL)
    try:
        async with connection.transaction():
            expired = await expire_lapsed(connection)
    finally:
        await connection.close()
    if expired:
        log.info("billing.entitlements_lapsed", count=expired)
    return expired


async def billing_tick() -> dict[str, Any]:
    use_correlation_id(f"billing-tick-{new_correlation_id()}")
    if not get_settings().BILLING_ENABLED:
        return {"billing_enabled": False}
    expired = await expire_lapsed_entitlements()
    usage = await report_usage()
    return {"entitlements_lapsed": expired, "usage": report_summary(usage)}

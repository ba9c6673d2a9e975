"""Telephony's reactions to domain events: a deactivated tenant's numbers are released at Twilio
(`tenant.deactivated`, published by identity when the Clerk organisation is deleted). It publishes
`call.missed`."""

from __future__ import annotations

import structlog

from nmc.db import hot_transaction
from nmc.events import TenantDeactivated, subscriber
from nmc.telephony.numbers import release_tenant_numbers

log = structlog.get_logger(module="telephony")


async def release_deactivated_numbers(event: TenantDeactivated) -> None:
    """Every live number released at Twilio, then marked released (a retry after a failure releases the
    rest; Twilio's 404 for one released already is done)."""
    async with hot_transaction() as connection:
        released = await release_tenant_numbers(connection, event.tenant_id)
    log.info("tenant.numbers_released", tenant_id=str(event.tenant_id), count=released)


subscriber(TenantDeactivated)(release_deactivated_numbers)

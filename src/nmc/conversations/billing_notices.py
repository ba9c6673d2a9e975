"""Billing notices: the owner is told by text when texting turns off and when a payment fails.

Billing cannot reach conversations (it sits below it); it publishes `billing.entitlement_changed`
and `billing.payment_failed`, and these subscribers queue one text to the owner each with
`queue_text` (kind `billing_notice`, the one kind the entitlement never suppresses: it is the news
that texting is off). Its idempotency key names the event (the transition) or the invoice, so a
redelivered event, a replay or Stripe's retries of a failing invoice tell the owner once.

The text goes from the tenant's first number to the owner (`owner_alert_number`, else that number's
forwarding number), in the owner's own thread, where the inbox shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from nmc.conversations.owner_texts import tell_owner
from nmc.db import hot_transaction
from nmc.events import BillingEntitlementChanged, BillingPaymentFailed
from nmc.messaging import MessageKind

log = structlog.get_logger(module="conversations")


# Why texting is off, in the owner's words (billing's `EntitlementReason` values).
OFF_BECAUSE = {
    "canceled": "your NeverMissCall subscription was canceled",
    "unpaid": "your NeverMissCall payment is overdue",
    "past_due_grace_over": "your NeverMissCall payment is overdue",
    "trial_ended": "your NeverMissCall free trial ended",
    "paused": "your NeverMissCall trial ended without a card on file",
    "incomplete": "your first NeverMissCall payment did not go through",
    "incomplete_expired": "your first NeverMissCall payment did not go through",
}


def texting_off_text(business_name: str, reason: str) -> str:
    because = OFF_BECAUSE.get(reason, "your NeverMissCall subscription is not active")
    return (
        f"{business_name}: texting is off because {because}. Missed calls and texts still reach your inbox, "
        "but callers get no replies. Subscribe or update your card under Billing to turn it back on."
    )


def _money(amount: int, currency: str) -> str:
    return f"${amount / 100:,.2f}" if currency.lower() == "usd" else f"{amount / 100:,.2f} {currency.upper()}"


def payment_failed_text(business_name: str, amount: int, currency: str, next_attempt: datetime | None) -> str:
    retry = f" We will try again on {next_attempt:%b %d}." if next_attempt else ""
    return (
        f"{business_name}: your NeverMissCall payment of {_money(amount, currency)} failed.{retry} "
        "Texting continues for now; update your card under Billing so callers keep getting replies."
    )


async def _tell_owner(
    connection: asyncpg.Connection, tenant_id: UUID, key: str, causation_id: str, text_for: Callable[[str], str]
) -> None:
    if await tell_owner(
        connection, tenant_id, kind=MessageKind.BILLING_NOTICE, key=key, causation_id=causation_id, text_for=text_for
    ):
        log.info("billing_notice.queued", notice=key.rsplit(":", 1)[0])


async def tell_owner_texting_is_off(event: BillingEntitlementChanged) -> None:
    """`billing.entitlement_changed` to off: one text per transition (keyed by the event)."""
    if event.texting_enabled or event.previous_enabled is False:
        return
    async with hot_transaction() as connection:
        await _tell_owner(
            connection,
            event.tenant_id,
            f"billing:texting_off:{event.event_id}",
            str(event.event_id),
            lambda name: texting_off_text(name, event.reason),
        )


async def tell_owner_payment_failed(event: BillingPaymentFailed) -> None:
    """`billing.payment_failed`: one text per invoice, however often Stripe retries it."""
    async with hot_transaction() as connection:
        await _tell_owner(
            connection,
            event.tenant_id,
            f"billing:payment_failed:{event.invoice_id}",
            str(event.event_id),
            lambda name: payment_failed_text(name, event.amount_due, event.currency, event.next_payment_attempt),
        )

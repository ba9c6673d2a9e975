"""The dedupe ledger: a delivery is recorded once; a retried one gets the first answer back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import CteStatement, Transactional, raw_connection
from nmc.observability.metrics import WEBHOOK_DEDUPE_HITS
from nmc.webhooks.models import WebhookEvent


@dataclass(frozen=True)
class Delivery:
    """One provider request, as the ledger keys it."""

    provider: str
    kind: str
    external_id: str
    payload: dict[str, Any]
    idempotency_token: str | None = None
    tenant_id: UUID | None = None


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to a delivery, stored with it so a retry gets the same one."""

    status: int
    body: str
    media_type: str


_RECORD_DELIVERY = """
    INSERT INTO webhook_events (id, provider, kind, external_id, payload, idempotency_token, tenant_id,
                                response_status, response_body, response_media_type)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT DO NOTHING
    RETURNING id
"""


async def record_first_delivery(session: Transactional, delivery: Delivery, answer: Answer) -> bool:
    """Insert the delivery with the answer we are about to give. False if it was seen before
    (same external id, or same provider idempotency token): the caller must not act again.

    On the first-SMS path: plain SQL on the session's connection (see `nmc.db.raw_connection`)."""
    inserted = await (await raw_connection(session)).fetchval(_RECORD_DELIVERY, *_ledger_row(delivery, answer))
    return _counted(delivery, first=inserted is not None)


# `first_delivery_in`'s part: the effects written in the same statement are gated on it.
FIRST_DELIVERY = "EXISTS (SELECT FROM first_delivery)"


def first_delivery_in(statement: CteStatement, delivery: Delivery, answer: Answer) -> None:
    """`record_first_delivery` as the part `first_delivery` of a statement: the parts after it act
    only when `FIRST_DELIVERY` holds, and `was_first` reads the outcome from the statement's row."""
    statement.with_cte("first_delivery", _RECORD_DELIVERY, _ledger_row(delivery, answer))
    statement.returning(f"{FIRST_DELIVERY} AS first_delivery")


def was_first(row: Mapping[str, Any], delivery: Delivery) -> bool:
    """Whether the statement carrying `first_delivery_in` recorded the delivery (False: a retry)."""
    return _counted(delivery, first=bool(row["first_delivery"]))


def _counted(delivery: Delivery, *, first: bool) -> bool:
    if not first:
        WEBHOOK_DEDUPE_HITS.labels(provider=delivery.provider).inc()
    return first


def _ledger_row(delivery: Delivery, answer: Answer) -> tuple[object, ...]:
    return (
        uuid4(),
        delivery.provider,
        delivery.kind,
        delivery.external_id,
        msgspec.json.encode(delivery.payload).decode(),
        delivery.idempotency_token,
        delivery.tenant_id,
        answer.status,
        answer.body,
        answer.media_type,
    )


_EARLIER_ANSWER = """
    SELECT response_status, response_body, response_media_type FROM webhook_events
    WHERE provider = $1 AND (external_id = $2 OR idempotency_token = $3)
    LIMIT 1
"""


async def earlier_answer(session: Transactional, delivery: Delivery) -> Answer | None:
    """The answer given to the first delivery of this request, if any (same external id, or same
    provider idempotency token)."""
    row = await (await raw_connection(session)).fetchrow(
        _EARLIER_ANSWER, delivery.provider, delivery.external_id, delivery.idempotency_token
    )
    if row is None or row["response_status"] is None:
        return None
    return Answer(
        status=row["response_status"], body=row["response_body"] or "", media_type=row["response_media_type"] or ""
    )


async def get_delivery(session: AsyncSession, webhook_event_id: UUID) -> WebhookEvent | None:
    return await session.get(WebhookEvent, webhook_event_id)

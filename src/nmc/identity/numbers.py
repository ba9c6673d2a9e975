"""A tenant's numbers as identity keeps them (`tenant_phone_numbers`): the face telephony's numbers API
(issue #15: buy, import, forward, verify, release) stores through. Every function runs on the
caller's connection, inside the caller's transaction; Twilio is telephony's business.

Forwarding verification: a code's HMAC (never the code) with its expiry; each check spends an
attempt, in one statement, whatever the outcome, so parallel guesses cannot exceed the limit.
The tenant turns `active` when onboarding's required steps are done (`REQUIRED_STEPS`): the
organisation (it exists) and a number; forwarding verification is shown as a step but texting does
not wait for it (a call to an unverified forwarding number is missed at once and texted back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID, uuid4

import asyncpg
import structlog

from nmc.identity.models import NumberSource, TenantStatus

log = structlog.get_logger(module="identity")

# Onboarding steps that must be done before a tenant texts callers (the others are shown, not required).
REQUIRED_STEPS = ("organization", "number")


@dataclass(frozen=True)
class TenantNumber:
    id: UUID
    tenant_id: UUID
    twilio_number: str
    twilio_sid: str | None
    forwarding_number: str
    source: str
    purchase_key: str | None
    forwarding_verified_at: datetime | None
    forwarding_code_pending: bool
    forwarding_code_sent_at: datetime | None
    forwarding_code_expires_at: datetime | None
    forwarding_code_attempts: int
    released_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class TenantProfile:
    """What onboarding shows of the tenant itself."""

    id: UUID
    name: str
    status: str
    timezone: str
    clerk_org_id: str | None
    hours_set_at: datetime | None


class ForwardingCheck(StrEnum):
    VERIFIED = "verified"  # the code matched: calls ring the forwarding number from now on
    ALREADY_VERIFIED = "already_verified"
    WRONG_CODE = "wrong_code"
    EXPIRED = "expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    NO_CODE = "no_code"  # none was sent (or the last one was used up): ask for a new one
    NOT_FOUND = "not_found"


_COLUMNS = """
    id, tenant_id, twilio_number, twilio_sid, forwarding_number, source, purchase_key, forwarding_verified_at,
    forwarding_code_hash IS NOT NULL AS forwarding_code_pending, forwarding_code_sent_at, forwarding_code_expires_at,
    forwarding_code_attempts, released_at, created_at
"""


def _number(row: asyncpg.Record) -> TenantNumber:
    return TenantNumber(**dict(row))


async def tenant_numbers(
    connection: asyncpg.Connection, tenant_id: UUID, *, include_released: bool = False
) -> list[TenantNumber]:
    released = "" if include_released else "AND released_at IS NULL"
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM tenant_phone_numbers WHERE tenant_id = $1 {released} ORDER BY created_at, id",
        tenant_id,
    )
    return [_number(row) for row in rows]


async def tenant_number(connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID) -> TenantNumber | None:
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM tenant_phone_numbers WHERE id = $1 AND tenant_id = $2 AND released_at IS NULL",
        number_id,
        tenant_id,
    )
    return _number(row) if row else None


async def number_for_purchase_key(connection: asyncpg.Connection, tenant_id: UUID, key: str) -> TenantNumber | None:
    """The number a purchase with this `Idempotency-Key` bought (released or not: a repeat is the same answer)."""
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM tenant_phone_numbers WHERE tenant_id = $1 AND purchase_key = $2", tenant_id, key
    )
    return _number(row) if row else None


async def live_number(connection: asyncpg.Connection, twilio_number: str) -> TenantNumber | None:
    """The tenant number (any tenant's) that `twilio_number` is, unless released."""
    row = await connection.fetchrow(
        f"SELECT {_COLUMNS} FROM tenant_phone_numbers WHERE twilio_number = $1 AND released_at IS NULL", twilio_number
    )
    return _number(row) if row else None


async def all_live_numbers(connection: asyncpg.Connection, tenant_id: UUID | None = None) -> list[TenantNumber]:
    """Every number in service (for `nmc numbers sync-webhooks`), or one tenant's."""
    rows = await connection.fetch(
        f"SELECT {_COLUMNS} FROM tenant_phone_numbers"
        " WHERE released_at IS NULL AND ($1::uuid IS NULL OR tenant_id = $1) ORDER BY tenant_id, created_at",
        tenant_id,
    )
    return [_number(row) for row in rows]


_ADD = f"""
    INSERT INTO tenant_phone_numbers (id, tenant_id, twilio_number, twilio_sid, forwarding_number, source, purchase_key,
                                      forwarding_verified_at, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, now(), now())
    RETURNING {_COLUMNS}
"""
_ACTIVATE = f"""
    UPDATE tenants SET status = '{TenantStatus.ACTIVE}', updated_at = now()
    WHERE id = $1 AND status = '{TenantStatus.ONBOARDING}'
      AND EXISTS (SELECT 1 FROM tenant_phone_numbers WHERE tenant_id = $1 AND released_at IS NULL)
    RETURNING id
"""


async def add_number(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    *,
    twilio_number: str,
    twilio_sid: str | None,
    forwarding_number: str,
    source: NumberSource,
    purchase_key: str | None = None,
) -> TenantNumber:
    """A number the tenant now has, its forwarding number not yet verified. A released row of the same
    number (Twilio gives numbers out again) gives way; the tenant turns active if this was the last
    required step. Raises `asyncpg.UniqueViolationError` when another tenant holds it."""
    await connection.execute(
        "DELETE FROM tenant_phone_numbers WHERE twilio_number = $1 AND released_at IS NOT NULL", twilio_number
    )
    row = await connection.fetchrow(
        _ADD, uuid4(), tenant_id, twilio_number, twilio_sid, forwarding_number, source, purchase_key
    )
    if await connection.fetchval(_ACTIVATE, tenant_id):
        log.info("tenant.activated", tenant_id=str(tenant_id), reason="required onboarding steps done")
    return _number(row)


async def set_purchase_key(connection: asyncpg.Connection, number_id: UUID, key: str) -> None:
    await connection.execute(
        "UPDATE tenant_phone_numbers SET purchase_key = $2, updated_at = now() WHERE id = $1 AND purchase_key IS NULL",
        number_id,
        key,
    )


async def change_forwarding(
    connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID, forwarding_number: str
) -> TenantNumber | None:
    """A new forwarding number is unverified (and any pending code void); the same one changes nothing."""
    row = await connection.fetchrow(
        f"""
        UPDATE tenant_phone_numbers SET
            forwarding_number = $3, forwarding_verified_at = NULL, forwarding_code_hash = NULL,
            forwarding_code_expires_at = NULL, forwarding_code_attempts = 0, forwarding_code_sent_at = NULL,
            updated_at = now()
        WHERE id = $1 AND tenant_id = $2 AND released_at IS NULL AND forwarding_number <> $3
        RETURNING {_COLUMNS}
        """,
        number_id,
        tenant_id,
        forwarding_number,
    )
    return _number(row) if row else await tenant_number(connection, tenant_id, number_id)


async def set_forwarding_code(
    connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID, code_hash: str, expires_at: datetime,
    resend_after: datetime,
) -> bool:  # fmt: skip
    """Store a new code (attempts reset) unless the last one was sent after `resend_after` (too soon)."""
    changed = await connection.fetchval(
        """
        UPDATE tenant_phone_numbers SET
            forwarding_code_hash = $3, forwarding_code_expires_at = $4, forwarding_code_attempts = 0,
            forwarding_code_sent_at = now(), updated_at = now()
        WHERE id = $1 AND tenant_id = $2 AND released_at IS NULL
          AND (forwarding_code_sent_at IS NULL OR forwarding_code_sent_at <= $5)
        RETURNING id
        """,
        number_id,
        tenant_id,
        code_hash,
        expires_at,
        resend_after,
    )
    return changed is not None


_CHECK = """
    WITH current AS (
        SELECT id, forwarding_code_hash, forwarding_code_expires_at, forwarding_code_attempts, forwarding_verified_at
        FROM tenant_phone_numbers WHERE id = $1 AND tenant_id = $2 AND released_at IS NULL FOR UPDATE
    ), verdict AS (
        SELECT id, CASE
            WHEN forwarding_code_hash IS NULL AND forwarding_verified_at IS NOT NULL THEN 'already_verified'
            WHEN forwarding_code_hash IS NULL THEN 'no_code'
            WHEN forwarding_code_attempts >= $4 THEN 'too_many_attempts'
            WHEN forwarding_code_expires_at <= now() THEN 'expired'
            WHEN forwarding_code_hash = $3 THEN 'verified'
            ELSE 'wrong_code'
        END AS outcome
        FROM current
    )
    UPDATE tenant_phone_numbers n SET
        forwarding_code_attempts = n.forwarding_code_attempts
            + CASE WHEN v.outcome IN ('wrong_code', 'verified') THEN 1 ELSE 0 END,
        forwarding_verified_at = CASE WHEN v.outcome = 'verified' THEN now() ELSE n.forwarding_verified_at END,
        forwarding_code_hash = CASE WHEN v.outcome = 'verified' THEN NULL ELSE n.forwarding_code_hash END,
        updated_at = now()
    FROM verdict v WHERE n.id = v.id
    RETURNING v.outcome, $4 - n.forwarding_code_attempts AS attempts_left
"""


async def check_forwarding_code(
    connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID, code_hash: str, max_attempts: int
) -> tuple[ForwardingCheck, int]:
    """(outcome, attempts left): every guess at a live code spends an attempt, the right one included."""
    row = await connection.fetchrow(_CHECK, number_id, tenant_id, code_hash, max_attempts)
    if row is None:
        return ForwardingCheck.NOT_FOUND, 0
    outcome = ForwardingCheck(row["outcome"])
    if outcome == ForwardingCheck.VERIFIED:
        log.info("forwarding.verified", tenant_id=str(tenant_id), number_id=str(number_id))
    return outcome, max(int(row["attempts_left"]), 0)


async def mark_released(connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID) -> TenantNumber | None:
    row = await connection.fetchrow(
        f"""
        UPDATE tenant_phone_numbers SET released_at = now(), forwarding_code_hash = NULL, updated_at = now()
        WHERE id = $1 AND tenant_id = $2 AND released_at IS NULL
        RETURNING {_COLUMNS}
        """,
        number_id,
        tenant_id,
    )
    return _number(row) if row else None


async def tenant_profile(connection: asyncpg.Connection, tenant_id: UUID) -> TenantProfile | None:
    row = await connection.fetchrow(
        "SELECT id, name, status, timezone, clerk_org_id, hours_set_at FROM tenants WHERE id = $1", tenant_id
    )
    return TenantProfile(**dict(row)) if row else None

"""Self-serve numbers (issue #15): search, buy, import, forward, verify the forwarding number, release,
and keep every number's webhooks pointing at us. Twilio is called from here (`twilio_numbers.py`); the
numbers themselves are identity's (`tenant_phone_numbers`, through its face); the forwarding code is
texted through conversations' outbox like every other text (`queue_owner_text`: telephony sits above
conversations, so it may ask it directly, in the request's transaction).

Buying is not repeatable by accident:
- purchases of one tenant are serialised (a transaction-scoped advisory lock);
- an `Idempotency-Key` seen before answers the number it bought;
- every purchase first reconciles: a number in our Twilio account tagged for this tenant
  (`FriendlyName` = `nmc:<tenant id>`, set at purchase) that we did not store — Twilio's purchase went
  through, our commit did not (an error after Twilio answered, a lost answer, a crash) — is stored now,
  and if it is the number asked for, answered instead of being bought again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar
from uuid import UUID, uuid4

import asyncpg
import structlog

from nmc.conversations import queue_owner_text
from nmc.identity import (
    ForwardingCheck,
    NumberSource,
    TenantNumber,
    add_number,
    all_live_numbers,
    change_forwarding,
    check_forwarding_code,
    live_number,
    mark_released,
    number_for_purchase_key,
    set_forwarding_code,
    set_purchase_key,
    tenant_number,
)
from nmc.problems import Conflict, DomainError, InvalidField, NotFound
from nmc.settings import get_settings
from nmc.telephony.twilio_numbers import (
    NOT_AVAILABLE,
    IncomingNumber,
    TwilioNumbers,
    TwilioRefused,
    TwilioUnavailable,
    WebhookUrls,
)

log = structlog.get_logger(module="telephony")

TAG_PREFIX = "nmc:"
CODE_TTL = timedelta(minutes=10)
CODE_MAX_ATTEMPTS = 5
CODE_RESEND_AFTER = timedelta(seconds=30)


class TwilioFailed(DomainError):
    """Twilio did not answer (or failed): whether it acted is unknown; retrying is safe."""

    status_code: ClassVar[int] = 502
    title: ClassVar[str] = "Twilio unavailable"


class TooSoon(DomainError):
    status_code: ClassVar[int] = 429
    title: ClassVar[str] = "Too many requests"


def tenant_tag(tenant_id: UUID) -> str:
    """The FriendlyName every number we buy or import for a tenant carries (Twilio allows 64 characters)."""
    return f"{TAG_PREFIX}{tenant_id}"


def code_hash(number_id: UUID, code: str) -> str:
    key = get_settings().SECRET_KEY.encode()
    return hmac.new(key, f"{number_id}:{code}".encode(), hashlib.sha256).hexdigest()


def code_text(code: str, number: str) -> str:
    return (
        f"NeverMissCall: your code is {code}. Enter it to let calls to {number} ring this phone. "
        f"It expires in {int(CODE_TTL.total_seconds() // 60)} minutes."
    )


def _unavailable(what: str) -> TwilioFailed:
    return TwilioFailed(
        f"Twilio did not confirm the {what}; retry (a purchase that went through is found, not repeated)"
    )


async def lock_tenant_numbers(connection: asyncpg.Connection, tenant_id: UUID) -> None:
    """One number change at a time per tenant, for this transaction."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('nmc.numbers:' || $1::uuid::text, 0))", tenant_id
    )


async def send_forwarding_code(connection: asyncpg.Connection, number: TenantNumber) -> bool:
    """A new code for the forwarding number, texted to it from the tenant number; False if one was sent
    less than `CODE_RESEND_AFTER` ago."""
    code = f"{secrets.randbelow(10**6):06d}"
    now = datetime.now(UTC)
    stored = await set_forwarding_code(
        connection, number.tenant_id, number.id, code_hash(number.id, code), now + CODE_TTL, now - CODE_RESEND_AFTER
    )
    if not stored:
        return False
    await queue_owner_text(
        connection,
        tenant_id=number.tenant_id,
        to=number.forwarding_number,
        from_=number.twilio_number,
        body=code_text(code, number.twilio_number),
        key=f"forwarding_code:{number.id}:{uuid4()}",
    )
    log.info("forwarding.code_sent", number_id=str(number.id), to=number.forwarding_number)
    return True


async def _with_code(connection: asyncpg.Connection, number: TenantNumber) -> TenantNumber:
    """The number after a code was texted to its forwarding number."""
    await send_forwarding_code(connection, number)
    return await tenant_number(connection, number.tenant_id, number.id) or number


async def reconcile(
    connection: asyncpg.Connection, tenant_id: UUID, forward_to: str, twilio: TwilioNumbers
) -> list[TenantNumber]:
    """Store every number tagged for this tenant in our Twilio account that we do not have (each joins
    the Messaging Service; its forwarding number is `forward_to`, unverified)."""
    try:
        tagged = await twilio.find(friendly_name=tenant_tag(tenant_id))
    except TwilioUnavailable as exc:
        raise _unavailable("numbers already bought") from exc
    adopted = []
    for incoming in tagged:
        if await live_number(connection, incoming.phone_number) is not None:
            continue
        await _join_service(twilio, incoming)
        number = await add_number(
            connection,
            tenant_id,
            twilio_number=incoming.phone_number,
            twilio_sid=incoming.sid,
            forwarding_number=forward_to,
            source=NumberSource.PURCHASED,
        )
        log.warning("numbers.reconciled", tenant_id=str(tenant_id), number=incoming.phone_number, sid=incoming.sid)
        adopted.append(number)
    return adopted


async def _join_service(twilio: TwilioNumbers, incoming: IncomingNumber) -> None:
    try:
        await twilio.add_to_messaging_service(incoming.sid)
    except TwilioUnavailable as exc:
        raise _unavailable("Messaging Service membership") from exc
    except TwilioRefused as exc:
        raise TwilioFailed(
            f"Twilio refused to add {incoming.phone_number} to the Messaging Service: {exc.message}"
        ) from exc


@dataclass(frozen=True)
class Purchase:
    number: TenantNumber
    created: bool  # False: the answer of an earlier purchase (same Idempotency-Key, or already ours)


async def purchase(
    connection: asyncpg.Connection, tenant_id: UUID, phone_number: str, forward_to: str, key: str | None
) -> Purchase:
    await lock_tenant_numbers(connection, tenant_id)
    if key and (earlier := await number_for_purchase_key(connection, tenant_id, key)):
        return Purchase(earlier, created=False)
    twilio = TwilioNumbers()
    adopted = [await _with_code(connection, n) for n in await reconcile(connection, tenant_id, forward_to, twilio)]
    found = next((n for n in adopted if n.twilio_number == phone_number), None)
    if found is not None:
        if key:
            await set_purchase_key(connection, found.id, key)
        return Purchase(found, created=True)
    if (live := await live_number(connection, phone_number)) is not None:
        if live.tenant_id == tenant_id:
            return Purchase(live, created=False)
        raise Conflict(f"{phone_number} is not available")
    try:
        bought = await twilio.buy(phone_number, tenant_tag(tenant_id), WebhookUrls.for_settings(get_settings()))
    except TwilioUnavailable as exc:
        raise _unavailable("purchase") from exc
    except TwilioRefused as exc:
        if exc.code == NOT_AVAILABLE:
            raise Conflict(f"{phone_number} is no longer available; search again") from exc
        raise InvalidField("phone_number", f"Twilio refused to sell {phone_number}: {exc.message}") from exc
    log.info("numbers.bought", tenant_id=str(tenant_id), number=bought.phone_number, sid=bought.sid)
    await _join_service(twilio, bought)
    number = await add_number(
        connection,
        tenant_id,
        twilio_number=bought.phone_number,
        twilio_sid=bought.sid,
        forwarding_number=forward_to,
        source=NumberSource.PURCHASED,
        purchase_key=key,
    )
    return Purchase(await _with_code(connection, number), created=True)


async def import_number(
    connection: asyncpg.Connection, tenant_id: UUID, phone_number: str, forward_to: str
) -> Purchase:
    """Bring your own number: one already in our Twilio account, not another tenant's."""
    await lock_tenant_numbers(connection, tenant_id)
    if (live := await live_number(connection, phone_number)) is not None:
        if live.tenant_id == tenant_id:
            return Purchase(live, created=False)
        raise Conflict(f"{phone_number} belongs to another account")
    twilio = TwilioNumbers()
    try:
        found = await twilio.find(phone_number=phone_number)
    except TwilioUnavailable as exc:
        raise _unavailable("lookup") from exc
    if not found:
        raise NotFound(f"{phone_number} is not in our Twilio account: port or add it there first")
    incoming = found[0]
    tag = incoming.friendly_name or ""
    if tag.startswith(TAG_PREFIX) and tag != tenant_tag(tenant_id):
        raise Conflict(f"{phone_number} belongs to another account")
    try:
        incoming = await twilio.update(
            incoming.sid, friendly_name=tenant_tag(tenant_id), hooks=WebhookUrls.for_settings(get_settings())
        )
    except TwilioUnavailable as exc:
        raise _unavailable("webhook settings") from exc
    await _join_service(twilio, incoming)
    number = await add_number(
        connection,
        tenant_id,
        twilio_number=incoming.phone_number,
        twilio_sid=incoming.sid,
        forwarding_number=forward_to,
        source=NumberSource.IMPORTED,
    )
    log.info("numbers.imported", tenant_id=str(tenant_id), number=phone_number, sid=incoming.sid)
    return Purchase(await _with_code(connection, number), created=True)


async def change_forward_to(
    connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID, forward_to: str
) -> TenantNumber:
    before = await tenant_number(connection, tenant_id, number_id)
    if before is None:
        raise NotFound("No such number")
    number = await change_forwarding(connection, tenant_id, number_id, forward_to)
    assert number is not None
    if before.forwarding_number != forward_to:
        return await _with_code(connection, number)
    return number


async def resend_code(connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID) -> TenantNumber:
    number = await tenant_number(connection, tenant_id, number_id)
    if number is None:
        raise NotFound("No such number")
    if number.forwarding_verified_at is not None:
        raise Conflict("The forwarding number is verified already")
    if not await send_forwarding_code(connection, number):
        raise TooSoon(f"A code was sent less than {int(CODE_RESEND_AFTER.total_seconds())} seconds ago")
    refreshed = await tenant_number(connection, tenant_id, number_id)
    assert refreshed is not None
    return refreshed


class CodeRefused(DomainError):
    status_code: ClassVar[int] = 422
    title: ClassVar[str] = "Invalid field"

    def __init__(self, detail: str, outcome: ForwardingCheck, attempts_left: int) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.attempts_left = attempts_left

    def problem_extra(self) -> dict[str, object]:
        return {"field": "code", "reason": str(self.outcome), "attempts_left": self.attempts_left}


async def verify_forwarding(connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID, code: str) -> None:
    """Check the code (on a connection that commits whatever the outcome: a wrong guess spends an attempt)."""
    outcome, left = await check_forwarding_code(
        connection, tenant_id, number_id, code_hash(number_id, code.strip()), CODE_MAX_ATTEMPTS
    )
    if outcome in {ForwardingCheck.VERIFIED, ForwardingCheck.ALREADY_VERIFIED}:
        return
    if outcome == ForwardingCheck.NOT_FOUND:
        raise NotFound("No such number")
    detail = {
        ForwardingCheck.WRONG_CODE: f"That code is not right ({left} attempts left)",
        ForwardingCheck.EXPIRED: "That code expired: ask for a new one",
        ForwardingCheck.TOO_MANY_ATTEMPTS: "Too many wrong codes: ask for a new one",
        ForwardingCheck.NO_CODE: "No code is waiting: ask for a new one",
    }[outcome]
    raise CodeRefused(detail, outcome, left)


async def release(connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID) -> TenantNumber:
    number = await tenant_number(connection, tenant_id, number_id)
    if number is None:
        raise NotFound("No such number")
    await release_at_twilio(number)
    released = await mark_released(connection, tenant_id, number_id)
    assert released is not None
    return released


async def release_at_twilio(number: TenantNumber, twilio: TwilioNumbers | None = None) -> None:
    """Release a number at Twilio (gone already is fine). A number wired by an operator has no SID: it
    is looked up by its number first."""
    twilio = twilio or TwilioNumbers()
    try:
        sid = number.twilio_sid
        if sid is None:
            found = await twilio.find(phone_number=number.twilio_number)
            sid = found[0].sid if found else None
        if sid is not None and await twilio.release(sid):
            log.info("numbers.released", tenant_id=str(number.tenant_id), number=number.twilio_number, sid=sid)
    except TwilioUnavailable as exc:
        raise _unavailable("release") from exc


async def release_tenant_numbers(connection: asyncpg.Connection, tenant_id: UUID) -> int:
    """Every number of a deactivated tenant released at Twilio and marked released (idempotent)."""
    twilio = TwilioNumbers()
    released = 0
    for number in await all_live_numbers(connection, tenant_id):
        await release_at_twilio(number, twilio)
        await mark_released(connection, tenant_id, number.id)
        released += 1
    return released


@dataclass(frozen=True)
class WebhookSync:
    number: str
    sid: str | None
    tenant_id: UUID | None
    changes: dict[str, tuple[str | None, str]]
    note: str = ""


async def sync_webhooks(
    connection: asyncpg.Connection, *, tenant_id: UUID | None = None, whole_account: bool = False, dry_run: bool = False
) -> list[WebhookSync]:
    """Every number's webhook URLs at Twilio compared with `PUBLIC_BASE_URL`'s, drift fixed (unless
    `dry_run`). The numbers we store; with `whole_account`, also every number in our Twilio account
    tagged `nmc:` that we do not store (bought, commit failed)."""
    twilio = TwilioNumbers()
    wanted = WebhookUrls.for_settings(get_settings())
    results: list[WebhookSync] = []
    seen: set[str] = set()
    for number in await all_live_numbers(connection, tenant_id):
        seen.add(number.twilio_number)
        incoming = await twilio.fetch(number.twilio_sid) if number.twilio_sid else None
        if incoming is None:
            found = await twilio.find(phone_number=number.twilio_number)
            incoming = found[0] if found else None
        if incoming is None:
            results.append(WebhookSync(number.twilio_number, None, number.tenant_id, {}, "not in our Twilio account"))
            continue
        results.append(await _sync_one(twilio, incoming, number.tenant_id, wanted, dry_run))
    if whole_account and tenant_id is None:
        for incoming in await twilio.find():
            if incoming.phone_number in seen or not (incoming.friendly_name or "").startswith(TAG_PREFIX):
                continue
            result = await _sync_one(twilio, incoming, None, wanted, dry_run)
            results.append(WebhookSync(result.number, result.sid, None, result.changes, "tagged but not stored"))
    return results


async def _sync_one(
    twilio: TwilioNumbers, incoming: IncomingNumber, tenant_id: UUID | None, wanted: WebhookUrls, dry_run: bool
) -> WebhookSync:
    changes = incoming.drift(wanted)
    if changes and not dry_run:
        await twilio.update(incoming.sid, hooks=wanted)
        log.info("numbers.webhooks_fixed", number=incoming.phone_number, sid=incoming.sid, changed=sorted(changes))
    return WebhookSync(incoming.phone_number, incoming.sid, tenant_id, changes)

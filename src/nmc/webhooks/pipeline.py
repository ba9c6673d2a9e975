"""One webhook pipeline for every provider.

Each delivery goes through the same steps, in this order, here and nowhere else:

1. read the raw body once (bodies above the provider's limit were refused with 413 by Litestar);
2. verify it with the provider's verifier (refused: its status as problem details, `webhook_signature_failures_total`,
   a WARN naming the headers present, never their values);
3. decode it (form or JSON) and parse it into the handler's typed payload (400 naming the field: a value
   its column cannot hold, a NUL character in any field, an idempotency token longer than the ledger keeps);
4. find the tenant it belongs to (`route`; an unroutable delivery gets its answer, nothing stored);
5. record the first delivery in the `webhook_events` ledger with the answer about to be given (a
   retry gets that stored answer back and `webhook_dedupe_hits_total`);
6. apply the effect in the same transaction;
7. answer.

Providers supply a `WebhookProvider` (verifier, decoder, body limit, idempotency header); each kind
of delivery supplies a `WebhookHandler`. `replay` runs a stored delivery through steps 3, 4 and 6.

Steps 4 to 6 run in one transaction: the route's `db_session` (SQLAlchemy), or, for a handler whose
statements are all plain SQL (`plain_sql`: Twilio's, on the first-SMS path), a transaction on the hot
asyncpg pool — a request's SQLAlchemy session, its dependency and its commit cost more CPU than the
whole rest of the webhook (ADR 0020). A handler whose effect can be written as parts of one statement
(`one_statement`: the call outcomes that publish `call.missed`) has steps 5 and 6 as one autocommitted
statement after the route's read, with no transaction: two round trips instead of six (ADR 0021).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar
from urllib.parse import parse_qsl
from uuid import UUID

import asyncpg
import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.db import CteStatement, Transactional, hot_connection, hot_transaction
from nmc.observability.metrics import WEBHOOK_SIGNATURE_FAILURES
from nmc.problems import NUL, nul_path
from nmc.settings import get_settings
from nmc.webhooks.ledger import (
    FIRST_DELIVERY,
    Answer,
    Delivery,
    earlier_answer,
    first_delivery_in,
    get_delivery,
    record_first_delivery,
    was_first,
)
from nmc.webhooks.models import MAX_IDEMPOTENCY_TOKEN_LENGTH

log = structlog.get_logger(module="webhooks")

P = TypeVar("P")  # a handler's typed payload
C = TypeVar("C")  # what `route` found (e.g. the number's owner)
# What a one-statement effect does with the statement's row once it ran (its log lines).
Applied = Callable[[Mapping[str, Any]], None]
_ERROR_FIELD = re.compile(r"at `\$\.([^`\[]+)|missing required field `([^`]+)`")


@dataclass(frozen=True)
class RawDelivery:
    """A provider's request as it reached us: the signed URL, the headers, the raw body."""

    url: str
    headers: Mapping[str, str]
    body: bytes

    @cached_property
    def form(self) -> dict[str, str]:
        """The body's form fields, decoded once (a form provider's verifier and decoder both read them)."""
        return dict(parse_qsl(self.body.decode("utf-8", errors="replace"), keep_blank_values=True))


def json_object(body: bytes) -> dict[str, Any]:
    """A signed JSON body as the ledger stores it: the object, or `{}` when it is not one — an
    authentic delivery that is not an event object then fails parsing with the missing field named
    (a 400), never a 500."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


class WebhookRefused(Exception):
    """The request is not a delivery we accept: answered with `status`, nothing stored."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Unrouted(Exception):
    """The delivery belongs to nobody here (e.g. a number no tenant owns): answered, nothing stored."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("unrouted delivery")
        self.answer = answer


class WebhookProvider(Protocol):
    """A provider's verifier and wire format."""

    name: str
    max_body_bytes: int
    idempotency_header: str  # the header of `idempotency_token`, as a refusal names it

    def verify(self, delivery: RawDelivery) -> WebhookRefused | None:
        """None when the delivery is authentic; otherwise why not, and the status to answer."""

    def decode(self, delivery: RawDelivery) -> dict[str, Any]:
        """The body as the ledger stores it (a form's fields, a JSON object)."""

    def idempotency_token(self, delivery: RawDelivery) -> str | None:
        """The provider's own retry token, a second dedupe key (Twilio's `I-Twilio-Idempotency-Token`)."""


class WebhookHandler(Generic[P, C]):
    """One kind of delivery: how it is parsed, keyed, routed, answered and applied.

    `answer` is a pure function of the delivery (a retry gets the stored answer anyway); `apply` is
    the effect, run once per first delivery and again only by `just replay-webhook`.
    """

    provider: ClassVar[WebhookProvider]
    kind: ClassVar[str]
    payload_type: ClassVar[type[Any]]
    # Every statement of `route` and `apply` is plain SQL (`nmc.db.raw_connection`): run on the hot pool.
    plain_sql: ClassVar[bool] = False
    # The effect is also written as parts of the ledger row's statement (`apply_in`): a first delivery
    # is then routed and recorded with its effect in two autocommitted round trips (plain SQL implied).
    one_statement: ClassVar[bool] = False

    def key(self, payload: P) -> str:
        """What makes two deliveries of this kind the same one."""
        raise NotImplementedError

    async def route(self, session: Transactional, payload: P) -> C | None:
        """The tenant context, or None when the kind has none; raise `Unrouted` to refuse quietly."""
        return None

    def tenant_id(self, context: C | None) -> UUID | None:
        return None

    def answer(self, payload: P, context: C | None) -> Answer:
        raise NotImplementedError

    async def apply(self, session: Transactional, payload: P, context: C | None, received_at: datetime) -> None:
        raise NotImplementedError

    def apply_in(
        self, statement: CteStatement, first: str, payload: P, context: C | None, received_at: datetime
    ) -> Applied:
        """`apply` as parts of `statement`, each acting only when the SQL condition `first` holds (this
        delivery's ledger row was written by the statement): the same effect, as `replay` still runs
        `apply`. Returns what to do with the statement's row once it ran."""
        raise NotImplementedError


def parse(handler: WebhookHandler[P, C], fields: Mapping[str, Any]) -> P:
    """The typed payload; `msgspec.ValidationError` naming the bad field otherwise (a NUL character
    anywhere, unknown fields included: Postgres text, and so the ledger's JSONB, cannot hold one)."""
    if (field := nul_path(dict(fields))) is not None:
        where = field.replace(NUL, "\\u0000")
        raise msgspec.ValidationError(f"must not contain NUL (\\u0000) characters - at `$.{where}`")
    parsed: P = msgspec.convert(fields, handler.payload_type, strict=False)
    return parsed


def _field_of(exc: msgspec.ValidationError) -> str:
    """The form field msgspec's message names (`... - at `$.From``, `missing required field `CallSid``)."""
    found = _ERROR_FIELD.search(str(exc))
    return next(group for group in found.groups() if group) if found else "body"


def _idempotency_token(handler: WebhookHandler[Any, Any], delivery: RawDelivery) -> str | None:
    """The provider's retry token, refused (400) when the ledger could not store it."""
    token = handler.provider.idempotency_token(delivery)
    if token is not None and (len(token) > MAX_IDEMPOTENCY_TOKEN_LENGTH or NUL in token):
        rule = f"at most {MAX_IDEMPOTENCY_TOKEN_LENGTH} characters, none of them NUL"
        _malformed(handler, handler.provider.idempotency_header, rule)
    return token


def _malformed(handler: WebhookHandler[Any, Any], field: str, error: str) -> NoReturn:
    log.info(
        "webhook.malformed",
        provider=handler.provider.name,
        kind=handler.kind,
        field=field,
        error=error,
        http_status=400,
    )
    raise ValidationException(f"Malformed {handler.kind} webhook: {field}: {error}", extra={"field": field})


def signed_url(request: Request[Any, Any, Any]) -> str:
    """The URL the provider signed: our public base URL + path (+ query), never the proxy's view."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = get_settings().public_url(request.url.path)
    return f"{url}?{query}" if query else url


@dataclass(frozen=True)
class Arrival(Generic[P]):
    """A delivery that passed steps 1 to 3: authentic and parsed."""

    payload: P
    fields: dict[str, Any]  # as the ledger stores them
    token: str | None
    received_at: datetime


async def receive(
    handler: WebhookHandler[P, C], request: Request[Any, Any, Any], session: AsyncSession | None = None
) -> Response[str]:
    """Steps 1 to 7 for one request: 4 to 6 in `session` (the route's `db_session`), or on the hot pool
    for a `plain_sql` handler (no session given); a forged or malformed request is refused before any
    of them touches the database. Committed before the answer: a provider never retries a 2xx, so a
    failed commit must become a 503/500 (advanced-alchemy's autocommit logs it at DEBUG and still sends
    the 2xx)."""
    arrival = await _arrive(handler, request)
    if handler.one_statement:
        async with hot_connection() as connection:
            return await _record_and_apply_at_once(handler, arrival, connection)
    if handler.plain_sql:
        async with hot_transaction() as connection:
            return await _record_and_apply(handler, arrival, connection)
    assert session is not None, f"{handler.kind} needs the route's db_session"
    response = await _record_and_apply(handler, arrival, session)
    await session.commit()
    return response


async def _arrive(handler: WebhookHandler[P, C], request: Request[Any, Any, Any]) -> Arrival[P]:
    """Steps 1 to 3: read, verify, decode and parse (403 / 400 otherwise)."""
    received_at = datetime.now(UTC)
    provider = handler.provider
    delivery = RawDelivery(url=signed_url(request), headers=request.headers, body=await request.body())
    if refused := provider.verify(delivery):
        _signature_failed(provider, handler.kind, delivery, refused)
    fields = provider.decode(delivery)
    token = _idempotency_token(handler, delivery)
    try:
        payload = parse(handler, fields)
    except msgspec.ValidationError as exc:
        _malformed(handler, _field_of(exc), str(exc))
    return Arrival(payload, fields, token, received_at)


@dataclass(frozen=True)
class Routed(Generic[C]):
    """A delivery that passed step 4: its tenant context, the answer it gets, its ledger key."""

    context: C | None
    answer: Answer
    delivery: Delivery


async def _route(handler: WebhookHandler[P, C], arrival: Arrival[P], db: Transactional) -> Routed[C] | Answer:
    """Step 4, and what steps 5 and 7 need: the routed delivery, or the answer for an unrouted one."""
    try:
        context = await handler.route(db, arrival.payload)
    except Unrouted as unrouted:
        log.info("webhook.unrouted", provider=handler.provider.name, kind=handler.kind)
        return unrouted.answer
    delivery = Delivery(
        provider=handler.provider.name,
        kind=handler.kind,
        external_id=f"{handler.kind}:{handler.key(arrival.payload)}",
        payload=arrival.fields,
        idempotency_token=arrival.token,
        tenant_id=handler.tenant_id(context),
    )
    if delivery.tenant_id:
        structlog.contextvars.bind_contextvars(tenant_id=str(delivery.tenant_id))
    return Routed(context, handler.answer(arrival.payload, context), delivery)


async def _record_and_apply(handler: WebhookHandler[P, C], arrival: Arrival[P], db: Transactional) -> Response[str]:
    """Steps 4 to 7: route, record the first delivery with its answer, apply, answer."""
    routed = await _route(handler, arrival, db)
    if isinstance(routed, Answer):
        return _respond(routed)
    if not await record_first_delivery(db, routed.delivery, routed.answer):
        return await _duplicate(handler, routed, db)
    await handler.apply(db, arrival.payload, routed.context, arrival.received_at)
    return _respond(routed.answer)


async def _record_and_apply_at_once(
    handler: WebhookHandler[P, C], arrival: Arrival[P], connection: asyncpg.Connection
) -> Response[str]:
    """Steps 4 to 7 for a `one_statement` handler: route (a read), then the ledger row and the effect
    as one autocommitted statement — both or neither, as in a transaction."""
    routed = await _route(handler, arrival, connection)
    if isinstance(routed, Answer):
        return _respond(routed)
    statement = CteStatement()
    first_delivery_in(statement, routed.delivery, routed.answer)
    applied = handler.apply_in(statement, FIRST_DELIVERY, arrival.payload, routed.context, arrival.received_at)
    row = await statement.run(connection)
    if not was_first(row, routed.delivery):
        return await _duplicate(handler, routed, connection)
    applied(row)
    return _respond(routed.answer)


async def _duplicate(handler: WebhookHandler[P, C], routed: Routed[C], db: Transactional) -> Response[str]:
    """A retried delivery: the answer its first delivery got, and nothing done again."""
    delivery = routed.delivery
    log.info("webhook.duplicate", provider=handler.provider.name, kind=handler.kind, external_id=delivery.external_id)
    return _respond(await earlier_answer(db, delivery) or routed.answer)


class ReplayRefused(ValueError):
    """The stored delivery cannot be replayed; the message says why."""


async def replay(
    session: AsyncSession, webhook_event_id: UUID, handlers: Mapping[tuple[str, str], WebhookHandler[Any, Any]]
) -> str:
    """`just replay-webhook`: a stored delivery through parse → route → apply again.

    For a bug fixed after the fact; the effects' own unique keys keep the exactly-once rules.
    """
    stored = await get_delivery(session, webhook_event_id)
    if stored is None:
        raise ReplayRefused(f"no webhook_events row {webhook_event_id}")
    handler = handlers.get((stored.provider, stored.kind))
    if handler is None:
        raise ReplayRefused(f"no handler for {stored.provider} {stored.kind}")
    payload = parse(handler, stored.payload)
    try:
        context = await handler.route(session, payload)
    except Unrouted:
        raise ReplayRefused(f"webhook {webhook_event_id} belongs to no tenant any more") from None
    await handler.apply(session, payload, context, stored.received_at)
    return f"replayed {stored.provider} {stored.kind} {stored.external_id}"


def _signature_failed(provider: WebhookProvider, kind: str, delivery: RawDelivery, refused: WebhookRefused) -> None:
    WEBHOOK_SIGNATURE_FAILURES.labels(provider=provider.name).inc()
    log.warning(
        "webhook.signature_failed",
        provider=provider.name,
        kind=kind,
        reason=refused.reason,
        headers=sorted(delivery.headers.keys()),
        http_status=refused.status,
    )
    raise HTTPException(status_code=refused.status, detail=refused.reason)


def _respond(answer: Answer) -> Response[str]:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

"""Twilio request signatures, checked with twilio's own RequestValidator against PUBLIC_BASE_URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import PermissionDeniedException, ValidationException
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator

from nmc.identity.service import NumberOwner, owner_of
from nmc.observability.metrics import WEBHOOK_SIGNATURE_FAILURES
from nmc.settings import get_settings
from nmc.webhooks.service import Delivery, StoredAnswer, earlier_answer, record_first_delivery

F = TypeVar("F")

log = structlog.get_logger(module="webhooks")

SIGNATURE_HEADER = "x-twilio-signature"
IDEMPOTENCY_HEADER = "i-twilio-idempotency-token"


def public_url(request: Request[Any, Any, Any]) -> str:
    """The URL Twilio signed: our public base URL + path (+ query), never the proxy's view."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = get_settings().public_url(request.url.path)
    return f"{url}?{query}" if query else url


def verify_twilio_request(request: Request[Any, Any, Any], params: dict[str, str]) -> None:
    """Raise 403 (and count it, and WARN with header names only) unless the signature is valid."""
    signature = request.headers.get(SIGNATURE_HEADER, "")
    validator = RequestValidator(get_settings().TWILIO_AUTH_TOKEN)
    if signature and validator.validate(public_url(request), params, signature):
        return
    WEBHOOK_SIGNATURE_FAILURES.labels(provider="twilio").inc()
    log.warning(
        "webhook.signature_failed",
        provider="twilio",
        path=request.url.path,
        signature_present=bool(signature),
        headers=sorted(request.headers.keys()),
        http_status=403,
    )
    raise PermissionDeniedException("Invalid Twilio signature")


def idempotency_token(request: Request[Any, Any, Any]) -> str | None:
    return request.headers.get(IDEMPOTENCY_HEADER) or None


@dataclass(frozen=True)
class TwilioWebhook(Generic[F]):
    """How one kind of Twilio callback is parsed, keyed for dedupe, answered and applied.

    `answer` must be a pure function of the request (a retry gets the stored answer anyway);
    `apply` is the effect, run once per first delivery and again only by `just replay-webhook`.
    """

    kind: str
    form: type[F]
    key: Callable[[F], str]
    number: Callable[[F], str | None]  # the tenant number that identifies the owner, if any
    answer: Callable[[F, NumberOwner | None], StoredAnswer]
    apply: Callable[[AsyncSession, F, NumberOwner | None, datetime], Awaitable[None]]


XML = "application/xml"


def parse_form_or_raise(spec: TwilioWebhook[F], params: dict[str, Any]) -> F:
    """The typed form; `ValueError` (msgspec's) naming the bad field otherwise."""
    return msgspec.convert(params, spec.form, strict=False)


def parse_form(spec: TwilioWebhook[F], params: dict[str, str]) -> F:
    try:
        return parse_form_or_raise(spec, params)
    except msgspec.ValidationError as exc:
        log.info("webhook.malformed", provider="twilio", kind=spec.kind, error=str(exc), http_status=400)
        raise ValidationException(f"Malformed {spec.kind} webhook: {exc}") from None


async def handle_twilio_webhook(
    request: Request[Any, Any, Any], session: AsyncSession, spec: TwilioWebhook[F]
) -> Response[str]:
    received_at = datetime.now(UTC)
    params = {key: str(value) for key, value in (await request.form()).items()}
    verify_twilio_request(request, params)
    form = parse_form(spec, params)
    number = spec.number(form)
    owner = await owner_of(session, number) if number else None
    if number and owner is None:
        log.info("webhook.unknown_number", provider="twilio", kind=spec.kind, number=number)
        return _respond(spec.answer(form, None))
    answer = spec.answer(form, owner)
    delivery = Delivery(
        provider="twilio",
        kind=spec.kind,
        external_id=f"{spec.kind}:{spec.key(form)}",
        payload=params,
        idempotency_token=idempotency_token(request),
        tenant_id=owner.tenant_id if owner else None,
    )
    if not await record_first_delivery(session, delivery, answer):
        log.info("webhook.duplicate", provider="twilio", kind=spec.kind, external_id=delivery.external_id)
        return _respond(await earlier_answer(session, delivery) or answer)
    if owner:
        structlog.contextvars.bind_contextvars(tenant_id=str(owner.tenant_id))
    await spec.apply(session, form, owner, received_at)
    return _respond(answer)


def _respond(answer: StoredAnswer) -> Response[str]:
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

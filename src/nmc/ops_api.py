"""The operators' REST API (issue #13): the kill switch of `just pause-sms` / `just resume-sms` over HTTP,
for an on-call engineer without a shell on the database (a phone, a chat-ops bot).

Operators only, never tenants: the routes answer the bearer token `OPS_API_TOKEN` (compared in constant
time) and nothing else. A Clerk session — even an organisation admin's — is a tenant's and gets a 403:
Clerk's organisation roles are granted by each organisation's own admins, so no role inside a tenant's
organisation can be trusted with a switch that stops every tenant's texts. Without `OPS_API_TOKEN` the
routes do not exist (404). The pause records who (`by`, as `<by> (ops API)`) and why, as the CLI does.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import structlog
from litestar import Controller, Router, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.problem_details import ProblemDetailsException

from nmc.ops import NotPaused, SmsSendingStatus, pause_sms, resume_sms, sms_sending_status
from nmc.problems import Conflict, InvalidField, refuse_nul_characters, schema_problem
from nmc.settings import get_settings

log = structlog.get_logger(module="ops")

VIA_API = " (ops API)"  # appended to `by` in sms_sending_state.paused_by (100 characters)


def operators_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard: `Authorization: Bearer <OPS_API_TOKEN>`, or 404 (the API is off) / 401 / 403."""
    token = get_settings().OPS_API_TOKEN
    if not token:
        raise ProblemDetailsException(status_code=404, title="Not found", detail="The operators' API is off")
    scheme, _sep, presented = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ProblemDetailsException(
            status_code=401,
            title="Unauthorized",
            detail="The operators' token is required (Authorization: Bearer <OPS_API_TOKEN>)",
            headers={"WWW-Authenticate": 'Bearer realm="ops"'},
        )
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        log.warning("ops.api_refused", path=connection.url.path, client=connection.client and connection.client.host)
        raise ProblemDetailsException(
            status_code=403, title="Forbidden", detail="Operators only: a tenant's session cannot use this API"
        )


class CircuitRead(msgspec.Struct, kw_only=True):
    open: bool
    opened_at: datetime | None
    http_status: int | None
    code: int | None
    reason: str | None
    next_probe_at: datetime | None


class SmsSendingRead(msgspec.Struct, kw_only=True):
    paused: bool  # by an operator (CLI or this API)
    paused_at: datetime | None
    paused_by: str | None
    pause_reason: str | None
    pause_outbound_sms_at_start: bool  # PAUSE_OUTBOUND_SMS as the web reads it (the worker has its own)
    circuit: CircuitRead  # opened by Twilio refusing our credentials or account (runbook §7.3)
    texts_waiting: int  # texts held as paused
    texts_stale: int  # of which waited longer than pause_max_age_minutes: a resume suppresses them
    oldest_waiting_at: datetime | None
    pause_max_age_minutes: int
    suppressed_after_pause_total: int


class SmsSendingChange(msgspec.Struct, forbid_unknown_fields=True):
    action: Literal["pause", "resume"]
    by: Annotated[str, msgspec.Meta(min_length=1, max_length=100 - len(VIA_API), description="Who (recorded)")]
    reason: Annotated[str, msgspec.Meta(max_length=200, description="Why (required to pause)")] = ""


class SmsSendingChanged(msgspec.Struct, kw_only=True):
    action: str
    suppressed: int | None  # resume: texts suppressed as stale (`paused_too_long`)
    released: int | None  # resume: waiting events released at once
    status: SmsSendingRead


def _read(status: SmsSendingStatus) -> SmsSendingRead:
    state, texts = status.state, status.texts
    return SmsSendingRead(
        paused=state.paused_at is not None,
        paused_at=state.paused_at,
        paused_by=state.paused_by,
        pause_reason=state.pause_reason,
        pause_outbound_sms_at_start=status.paused_at_start,
        circuit=CircuitRead(
            open=state.circuit_opened_at is not None,
            opened_at=state.circuit_opened_at,
            http_status=state.circuit_http_status,
            code=state.circuit_code,
            reason=state.circuit_reason,
            next_probe_at=state.circuit_probe_at,
        ),
        texts_waiting=texts.waiting,
        texts_stale=texts.stale,
        oldest_waiting_at=texts.oldest,
        pause_max_age_minutes=status.max_age_minutes,
        suppressed_after_pause_total=state.suppressed_after_pause,
    )


class SmsSendingController(Controller):
    path = "/sms-sending"
    include_in_schema = False  # not part of the tenants' API (README "Operations")

    @get()
    async def read(self) -> SmsSendingRead:
        """The pause (who, why, since), the sending circuit, and how many paused texts a resume would
        suppress as stale (the same figures as `just pause-sms --status`)."""
        return _read(await sms_sending_status())

    @post(status_code=200)
    async def change(self, data: SmsSendingChange) -> SmsSendingChanged:
        by = data.by.strip()
        if not by:
            raise InvalidField("by", "say who you are")
        if data.action == "pause":
            reason = data.reason.strip()
            if not reason:
                raise InvalidField("reason", "say why sending is paused")
            await pause_sms(by + VIA_API, reason)
            log.warning("ops.sms_paused", by=by, reason=reason, via="api")
            return SmsSendingChanged(
                action="pause", suppressed=None, released=None, status=_read(await sms_sending_status())
            )
        try:
            resumed = await resume_sms()
        except NotPaused:
            raise Conflict("Sending was not paused by an operator") from None
        log.warning("ops.sms_resumed", by=by, suppressed=resumed.suppressed, released=resumed.released, via="api")
        return SmsSendingChanged(
            action="resume",
            suppressed=resumed.suppressed,
            released=resumed.released,
            status=_read(await sms_sending_status()),
        )


def ops_router() -> Router:
    return Router(
        path="/api/ops",
        route_handlers=[SmsSendingController],
        guards=[operators_only],
        exception_handlers={ValidationException: schema_problem},
        before_request=refuse_nul_characters,
    )

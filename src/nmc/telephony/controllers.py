"""Twilio voice and message-status webhooks (form-encoded POSTs, answered with TwiML)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, post
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.conversations.service import update_delivery_status
from nmc.identity.service import NumberOwner
from nmc.settings import get_settings
from nmc.telephony import twiml
from nmc.telephony.schemas import CallStatusForm, DialOutcomeForm, IncomingCallForm, MessageStatusForm
from nmc.telephony.service import CallOutcome, apply_outcome, is_missed, record_ringing
from nmc.webhooks.service import StoredAnswer
from nmc.webhooks.twilio import XML, TwilioWebhook, handle_twilio_webhook

DIAL_STATUS_PATH = "/webhooks/twilio/voice/dial-status"


def _xml(body: str) -> StoredAnswer:
    return StoredAnswer(status=200, body=body, media_type=XML)


# ---------------------------------------------------------------- incoming call → <Dial>
def _incoming_answer(form: IncomingCallForm, owner: NumberOwner | None) -> StoredAnswer:
    if owner is None:
        return _xml(twiml.not_in_service())
    return _xml(twiml.forward_call(owner.forwarding_number, get_settings().public_url(DIAL_STATUS_PATH)))


async def _incoming_apply(
    session: AsyncSession, form: IncomingCallForm, owner: NumberOwner | None, _: datetime
) -> None:
    assert owner is not None
    await record_ringing(session, owner, form.call_sid, form.from_, form.to)


INCOMING_CALL = TwilioWebhook(
    kind="voice.incoming",
    form=IncomingCallForm,
    key=lambda f: f.call_sid,
    number=lambda f: f.to,
    answer=_incoming_answer,
    apply=_incoming_apply,
)


# ---------------------------------------------------------------- <Dial> outcome
def _dial_answer(form: DialOutcomeForm, owner: NumberOwner | None) -> StoredAnswer:
    if owner is None:
        return _xml(twiml.not_in_service())
    if is_missed(form.dial_call_status, form.dial_call_duration, get_settings()):
        return _xml(twiml.after_missed_call(owner.business_name))
    return _xml(twiml.end_call())


async def _dial_apply(session: AsyncSession, form: DialOutcomeForm, owner: NumberOwner | None, at: datetime) -> None:
    assert owner is not None
    outcome = CallOutcome(
        call_sid=form.call_sid,
        caller=form.from_,
        tenant_number=form.to,
        status=form.dial_call_status,
        duration_seconds=form.dial_call_duration,
        from_dial=True,
    )
    await apply_outcome(session, owner, outcome, at, get_settings())


DIAL_OUTCOME = TwilioWebhook(
    kind="voice.dial-status",
    form=DialOutcomeForm,
    key=lambda f: f.call_sid,
    number=lambda f: f.to,
    answer=_dial_answer,
    apply=_dial_apply,
)


# ---------------------------------------------------------------- parent call status (fallback)
async def _status_apply(session: AsyncSession, form: CallStatusForm, owner: NumberOwner | None, at: datetime) -> None:
    assert owner is not None
    outcome = CallOutcome(
        call_sid=form.call_sid,
        caller=form.from_,
        tenant_number=form.to,
        status=form.call_status,
        duration_seconds=form.call_duration,
        from_dial=False,
    )
    await apply_outcome(session, owner, outcome, at, get_settings())


CALL_STATUS = TwilioWebhook(
    kind="voice.status",
    form=CallStatusForm,
    key=lambda f: f"{f.call_sid}:{f.call_status}",
    number=lambda f: f.to,
    answer=lambda f, o: _xml(twiml.empty()),
    apply=_status_apply,
)


# ---------------------------------------------------------------- message status callbacks
async def _message_status_apply(
    session: AsyncSession, form: MessageStatusForm, owner: NumberOwner | None, _: datetime
) -> None:
    await update_delivery_status(session, form.message_sid, form.message_status, form.error_code)


MESSAGE_STATUS = TwilioWebhook(
    kind="sms.status",
    form=MessageStatusForm,
    key=lambda f: f"{f.message_sid}:{f.message_status}",
    number=lambda f: None,
    answer=lambda f, o: _xml(twiml.empty()),
    apply=_message_status_apply,
)

TWILIO_WEBHOOKS: dict[str, TwilioWebhook[Any]] = {
    spec.kind: spec for spec in (INCOMING_CALL, DIAL_OUTCOME, CALL_STATUS, MESSAGE_STATUS)
}


class TwilioVoiceWebhooks(Controller):
    path = "/webhooks/twilio"
    tags = ["Webhooks"]
    include_in_schema = False

    @post("/voice")
    async def incoming_call(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, INCOMING_CALL)

    @post("/voice/dial-status")
    async def dial_outcome(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, DIAL_OUTCOME)

    @post("/voice/status")
    async def call_status(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, CALL_STATUS)

    @post("/sms/status")
    async def message_status(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, MESSAGE_STATUS)

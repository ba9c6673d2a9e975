"""Twilio voice, inbound-SMS and message-status webhooks (form-encoded POSTs, answered with TwiML)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.conversations.inbound import InboundSms, Media, apply_inbound
from nmc.conversations.service import update_delivery_status
from nmc.identity.service import NumberOwner
from nmc.settings import get_settings
from nmc.telephony import twiml
from nmc.telephony.schemas import CallStatusForm, DialOutcomeForm, InboundSmsForm, IncomingCallForm, MessageStatusForm
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


def _outcome(form: DialOutcomeForm | CallStatusForm) -> CallOutcome:
    if isinstance(form, DialOutcomeForm):
        return CallOutcome(form.call_sid, form.from_, form.to, form.dial_call_status, form.dial_call_duration, True)
    return CallOutcome(form.call_sid, form.from_, form.to, form.call_status, form.call_duration, False)


async def _outcome_apply(
    session: AsyncSession, form: DialOutcomeForm | CallStatusForm, owner: NumberOwner | None, at: datetime
) -> None:
    """The <Dial> outcome (authoritative) or the parent call's status (fallback)."""
    assert owner is not None
    await apply_outcome(session, owner, _outcome(form), at, get_settings())


DIAL_OUTCOME = TwilioWebhook(
    kind="voice.dial-status",
    form=DialOutcomeForm,
    key=lambda f: f.call_sid,
    number=lambda f: f.to,
    answer=_dial_answer,
    apply=_outcome_apply,
)


# ---------------------------------------------------------------- parent call status (fallback)
CALL_STATUS = TwilioWebhook(
    kind="voice.status",
    form=CallStatusForm,
    key=lambda f: f"{f.call_sid}:{f.call_status}",
    number=lambda f: f.to,
    answer=lambda f, o: _xml(twiml.empty()),
    apply=_outcome_apply,
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


# ---------------------------------------------------------------- inbound SMS / MMS from callers
async def _inbound_sms_apply(
    session: AsyncSession, form: InboundSmsForm, owner: NumberOwner | None, received_at: datetime
) -> None:
    assert owner is not None
    sms = InboundSms(
        message_sid=form.message_sid,
        caller=form.from_,
        tenant_number=form.to,
        body=form.body,
        media=[Media(url, content_type) for url, content_type in form.media()],
        opt_out_type=form.opt_out_type,
    )
    await apply_inbound(session, owner.tenant_id, sms, received_at)


# Answered with empty TwiML: no auto-reply from the webhook (Twilio confirms STOP itself; HELP's
# answer and everything else go out through the outbox).
INBOUND_SMS = TwilioWebhook(
    kind="sms.inbound",
    form=InboundSmsForm,
    key=lambda f: f.message_sid,
    number=lambda f: f.to,
    answer=lambda f, o: _xml(twiml.empty()),
    apply=_inbound_sms_apply,
)

TWILIO_WEBHOOKS: dict[str, TwilioWebhook[Any]] = {
    spec.kind: spec for spec in (INCOMING_CALL, DIAL_OUTCOME, CALL_STATUS, MESSAGE_STATUS, INBOUND_SMS)
}


class TwilioVoiceWebhooks(Controller):
    path = "/webhooks/twilio"
    tags = ["Webhooks"]
    include_in_schema = False

    @post("/voice")
    async def incoming_call(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, INCOMING_CALL)

    @post("/voice/dial-status")
    async def dial_outcome(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, DIAL_OUTCOME)

    @post("/voice/status")
    async def call_status(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, CALL_STATUS)

    @post("/sms")
    async def inbound_sms(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, INBOUND_SMS)

    @post("/sms/status")
    async def message_status(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await handle_twilio_webhook(request, db_session, MESSAGE_STATUS)

"""Twilio's voice, inbound-SMS and message-status callbacks as webhook handlers.

Each is one kind of delivery for the shared pipeline (`nmc.webhooks.receive`): its form, its dedupe
key, the tenant number that routes it, its TwiML answer and its effect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from nmc.conversations import InboundSms, Media, apply_inbound, update_delivery_status
from nmc.db import CteStatement, Transactional
from nmc.identity import NumberOwner, owner_of
from nmc.settings import get_settings
from nmc.telephony import twiml
from nmc.telephony.schemas import CallStatusForm, DialOutcomeForm, InboundSmsForm, IncomingCallForm, MessageStatusForm
from nmc.telephony.service import NOT_FORWARDED, CallOutcome, apply_outcome, is_missed, outcome_in, record_ringing
from nmc.webhooks import TWILIO, Answer, Applied, Unrouted, WebhookHandler, twiml_answer

DIAL_STATUS_PATH = "/webhooks/twilio/voice/dial-status"
EMPTY = twiml_answer(twiml.empty())
NOT_IN_SERVICE = twiml_answer(twiml.not_in_service())


class TenantNumberCallback(WebhookHandler[Any, NumberOwner]):
    """A callback about a call or text to a tenant's number (`To`): routed to the number's owner."""

    provider = TWILIO
    plain_sql = True
    unrouted: ClassVar[Answer] = EMPTY  # the answer for a number no tenant owns

    async def route(self, session: Transactional, payload: Any) -> NumberOwner:
        owner = await owner_of(session, payload.to)
        if owner is None:
            raise Unrouted(self.unrouted)
        return owner

    def tenant_id(self, context: NumberOwner | None) -> UUID | None:
        return context.tenant_id if context else None

    def key(self, payload: Any) -> str:
        return str(payload.call_sid)


class IncomingCall(TenantNumberCallback):
    """A call to a tenant number: ring the forwarding number, and tell us how the <Dial> ended.

    A forwarding number not verified yet (a self-serve number, issue #15) is never rung: the caller hears
    the missed-call message at once and the call is missed (`not-forwarded`), so it is texted back."""

    kind = "voice.incoming"
    payload_type = IncomingCallForm
    unrouted = NOT_IN_SERVICE

    def answer(self, payload: IncomingCallForm, owner: NumberOwner | None) -> Answer:
        assert owner is not None
        if not owner.forwarding_verified:
            return twiml_answer(twiml.after_missed_call(owner.business_name))
        return twiml_answer(twiml.forward_call(owner.forwarding_number, get_settings().public_url(DIAL_STATUS_PATH)))

    async def apply(
        self, session: Transactional, payload: IncomingCallForm, owner: NumberOwner | None, at: datetime
    ) -> None:
        assert owner is not None
        await record_ringing(session, owner, payload.call_sid, payload.from_, payload.to)
        if not owner.forwarding_verified:
            outcome = CallOutcome(payload.call_sid, payload.from_, payload.to, NOT_FORWARDED, None, True)
            await apply_outcome(session, owner, outcome, at, get_settings())


class CallOutcomeCallback(TenantNumberCallback):
    """A callback that says what became of a call: its upsert and `call.missed` are written with the
    ledger row as one statement (`outcome_in`); `apply` is the same effect in a transaction (replay)."""

    one_statement = True

    def outcome(self, payload: Any) -> CallOutcome:
        raise NotImplementedError

    async def apply(self, session: Transactional, payload: Any, owner: NumberOwner | None, at: datetime) -> None:
        assert owner is not None
        await apply_outcome(session, owner, self.outcome(payload), at, get_settings())

    def apply_in(
        self, statement: CteStatement, first: str, payload: Any, owner: NumberOwner | None, at: datetime
    ) -> Applied:
        assert owner is not None
        return outcome_in(statement, first, owner, self.outcome(payload), at, get_settings())


class DialOutcome(CallOutcomeCallback):
    """How the <Dial> ended: authoritative for whether the call was missed."""

    kind = "voice.dial-status"
    payload_type = DialOutcomeForm
    unrouted = NOT_IN_SERVICE

    def answer(self, payload: DialOutcomeForm, owner: NumberOwner | None) -> Answer:
        assert owner is not None
        if is_missed(payload.dial_call_status, payload.dial_call_duration, get_settings()):
            return twiml_answer(twiml.after_missed_call(owner.business_name))
        return twiml_answer(twiml.end_call())

    def outcome(self, payload: DialOutcomeForm) -> CallOutcome:
        return CallOutcome(
            payload.call_sid, payload.from_, payload.to, payload.dial_call_status, payload.dial_call_duration, True
        )


class CallStatus(CallOutcomeCallback):
    """The parent call's status callback: a fallback that counts only while no dial outcome is known."""

    kind = "voice.status"
    payload_type = CallStatusForm

    def key(self, payload: CallStatusForm) -> str:
        return f"{payload.call_sid}:{payload.call_status}"

    def answer(self, payload: CallStatusForm, owner: NumberOwner | None) -> Answer:
        return EMPTY

    def outcome(self, payload: CallStatusForm) -> CallOutcome:
        return CallOutcome(
            payload.call_sid, payload.from_, payload.to, payload.call_status, payload.call_duration, False
        )


class InboundText(TenantNumberCallback):
    """A caller's SMS/MMS. Answered with empty TwiML: Twilio confirms STOP itself, and HELP's answer and
    everything else go out through the outbox."""

    kind = "sms.inbound"
    payload_type = InboundSmsForm

    def key(self, payload: InboundSmsForm) -> str:
        return payload.message_sid

    def answer(self, payload: InboundSmsForm, owner: NumberOwner | None) -> Answer:
        return EMPTY

    async def apply(
        self, session: Transactional, payload: InboundSmsForm, owner: NumberOwner | None, received_at: datetime
    ) -> None:
        assert owner is not None
        sms = InboundSms(
            message_sid=payload.message_sid,
            caller=payload.from_,
            tenant_number=payload.to,
            body=payload.body,
            media=[Media(url, content_type) for url, content_type in payload.media()],
            opt_out_type=payload.opt_out_type,
        )
        await apply_inbound(session, owner.tenant_id, sms, received_at)


class MessageStatus(WebhookHandler[MessageStatusForm, None]):
    """A status callback for one of our texts (not routed by number: the message knows its tenant)."""

    provider = TWILIO
    plain_sql = True
    kind = "sms.status"
    payload_type = MessageStatusForm

    def key(self, payload: MessageStatusForm) -> str:
        return f"{payload.message_sid}:{payload.message_status}"

    def answer(self, payload: MessageStatusForm, context: None) -> Answer:
        return EMPTY

    async def apply(self, session: Transactional, payload: MessageStatusForm, context: None, _: datetime) -> None:
        await update_delivery_status(session, payload.message_sid, payload.message_status, payload.error_code)


INCOMING_CALL = IncomingCall()
DIAL_OUTCOME = DialOutcome()
CALL_STATUS = CallStatus()
INBOUND_TEXT = InboundText()
MESSAGE_STATUS = MessageStatus()

# Every Twilio handler by (provider, kind), for `just replay-webhook`.
TWILIO_WEBHOOKS: dict[tuple[str, str], WebhookHandler[Any, Any]] = {
    (handler.provider.name, handler.kind): handler
    for handler in (INCOMING_CALL, DIAL_OUTCOME, CALL_STATUS, INBOUND_TEXT, MESSAGE_STATUS)
}

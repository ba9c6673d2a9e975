"""Twilio's form-encoded webhook bodies, as far as we read them (they may carry more fields)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from nmc.events.catalog import E164

CallSid = Annotated[str, msgspec.Meta(pattern=r"^CA[0-9a-fA-F]{32}$")]
MessageSid = Annotated[str, msgspec.Meta(pattern=r"^(SM|MM)[0-9a-fA-F]{32}$")]


class IncomingCallForm(msgspec.Struct, rename="pascal"):
    call_sid: CallSid
    from_: str = msgspec.field(name="From")
    to: E164


class DialOutcomeForm(msgspec.Struct, rename="pascal"):
    call_sid: CallSid
    from_: str = msgspec.field(name="From")
    to: E164
    dial_call_status: str
    dial_call_duration: int | None = None


class CallStatusForm(msgspec.Struct, rename="pascal"):
    call_sid: CallSid
    from_: str = msgspec.field(name="From")
    to: E164
    call_status: str
    call_duration: int | None = None


class MessageStatusForm(msgspec.Struct, rename="pascal"):
    message_sid: MessageSid
    message_status: str
    error_code: int | None = None

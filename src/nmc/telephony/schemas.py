"""Twilio's form-encoded webhook bodies, as far as we read them (they may carry more fields)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from nmc.events import E164

CallSid = Annotated[str, msgspec.Meta(pattern=r"^CA[0-9a-fA-F]{32}$")]
MessageSid = Annotated[str, msgspec.Meta(pattern=r"^(SM|MM)[0-9a-fA-F]{32}$")]
Sender = Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
MAX_MEDIA = 10  # Twilio's limit per MMS


class CallForm(msgspec.Struct, rename="pascal"):
    """What every voice callback carries (Twilio's field names: `CallSid`, `From`, `To`)."""

    call_sid: CallSid
    from_: str = msgspec.field(name="From")
    to: E164


class IncomingCallForm(CallForm):
    pass


class DialOutcomeForm(CallForm):
    dial_call_status: str
    dial_call_duration: int | None = None


class CallStatusForm(CallForm):
    call_status: str
    call_duration: int | None = None


class MessageStatusForm(msgspec.Struct, rename="pascal"):
    message_sid: MessageSid
    message_status: str
    error_code: int | None = None


class InboundSmsForm(msgspec.Struct, rename="pascal"):
    """A caller's SMS/MMS to a tenant number. Media come as `MediaUrl{i}`/`MediaContentType{i}`, i < NumMedia."""

    message_sid: MessageSid
    from_: Sender = msgspec.field(name="From")
    to: E164
    body: str = ""
    num_media: int = 0
    # Sent with Advanced Opt-Out only: STOP, START or HELP when the body is one of their keywords.
    opt_out_type: str | None = None
    media_url0: str | None = None
    media_url1: str | None = None
    media_url2: str | None = None
    media_url3: str | None = None
    media_url4: str | None = None
    media_url5: str | None = None
    media_url6: str | None = None
    media_url7: str | None = None
    media_url8: str | None = None
    media_url9: str | None = None
    media_content_type0: str | None = None
    media_content_type1: str | None = None
    media_content_type2: str | None = None
    media_content_type3: str | None = None
    media_content_type4: str | None = None
    media_content_type5: str | None = None
    media_content_type6: str | None = None
    media_content_type7: str | None = None
    media_content_type8: str | None = None
    media_content_type9: str | None = None

    def media(self) -> list[tuple[str, str | None]]:
        """(url, content type) per attachment, in Twilio's order."""
        found = []
        for i in range(min(self.num_media, MAX_MEDIA)):
            url = getattr(self, f"media_url{i}")
            if url:
                found.append((url, getattr(self, f"media_content_type{i}")))
        return found

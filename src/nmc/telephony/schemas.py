"""Twilio's form-encoded webhook bodies, as far as we read them (they may carry more fields).

Each field we store fits its column: a value that cannot is a 400 naming the field (the pipeline),
never a database error. A NUL character in any field is refused by the pipeline itself.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec

from nmc.events import E164

CallSid = Annotated[str, msgspec.Meta(pattern=r"^CA[0-9a-fA-F]{32}$")]
MessageSid = Annotated[str, msgspec.Meta(pattern=r"^(SM|MM)[0-9a-fA-F]{32}$")]
# A caller's address as Twilio sends it in `From`: E.164, but also a SIP URI
# (`sip:someone@example.sip.twilio.com`), `client:…`, a short code or `anonymous`. Columns: 255.
Caller = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
# Twilio's call and message statuses are short lowercase words (`no-answer`, `partially_delivered`);
# they are stored in 20-character columns.
Status = Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[a-z][a-z_-]*$")]
# Durations and error codes are stored in integer (int4) columns.
Int4 = Annotated[int, msgspec.Meta(ge=0, le=2_147_483_647)]
MAX_MEDIA = 10  # Twilio's limit per MMS


class CallForm(msgspec.Struct, rename="pascal"):
    """What every voice callback carries (Twilio's field names: `CallSid`, `From`, `To`)."""

    call_sid: CallSid
    from_: Caller = msgspec.field(name="From")
    to: E164


class IncomingCallForm(CallForm):
    pass


class DialOutcomeForm(CallForm):
    dial_call_status: Status
    dial_call_duration: Int4 | None = None


class CallStatusForm(CallForm):
    call_status: Status
    call_duration: Int4 | None = None


class MessageStatusForm(msgspec.Struct, rename="pascal"):
    message_sid: MessageSid
    message_status: Status
    error_code: Int4 | None = None


class InboundSmsForm(msgspec.Struct, rename="pascal"):
    """A caller's SMS/MMS to a tenant number. Media come as `MediaUrl{i}`/`MediaContentType{i}`, i < NumMedia."""

    message_sid: MessageSid
    from_: Caller = msgspec.field(name="From")
    to: E164
    body: str = ""  # up to 1,600 characters (a concatenated SMS); the column is text
    num_media: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Sent with Advanced Opt-Out only: STOP, START or HELP when the body is one of their keywords.
    opt_out_type: Annotated[str, msgspec.Meta(max_length=20)] | None = None
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


# ---------------------------------------------------------------- the numbers and onboarding API (issue #15)

AREA_CODE_PATTERN = r"^[2-9]\d{2}$"
# Twilio's `Contains`: digits and letters (vanity, mapped to digits), `*` for any one digit.
CONTAINS_PATTERN = r"^[0-9A-Za-z*]{1,16}$"
Code = Annotated[str, msgspec.Meta(pattern=r"^\s*\d{6}\s*$", examples=["123456"])]


class AvailableNumberRead(msgspec.Struct):
    phone_number: str
    friendly_name: str
    locality: str | None
    region: str | None
    postal_code: str | None
    iso_country: str


class NumberCreate(msgspec.Struct, forbid_unknown_fields=True):
    phone_number: E164
    forward_to: E164


class NumberUpdate(msgspec.Struct, forbid_unknown_fields=True):
    forward_to: E164


class ForwardingCode(msgspec.Struct, forbid_unknown_fields=True):
    code: Code


class ForwardingRead(msgspec.Struct):
    """Whether calls ring `forward_to`: only once it is verified by the code texted to it."""

    verified: bool
    verified_at: str | None
    code_pending: bool
    code_expires_at: str | None
    attempts_left: int


class NumberRead(msgspec.Struct):
    id: str
    phone_number: str
    forward_to: str
    source: str  # purchased | imported | operator
    forwarding: ForwardingRead
    created_at: str


class OnboardingStep(msgspec.Struct):
    key: str
    title: str
    done: bool
    required: bool
    detail: str | None = None


class OnboardingRead(msgspec.Struct):
    status: str  # the tenant's: onboarding | active | ...
    live: bool  # texting callers back
    steps: list[OnboardingStep]
    required_open: list[str]


class TestCallCreate(msgspec.Struct, forbid_unknown_fields=True):
    number_id: UUID | None = None  # the tenant's number to call; default: its first


class TestCallRead(msgspec.Struct):
    call_sid: str
    to: str
    from_: str = msgspec.field(name="from")

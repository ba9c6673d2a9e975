"""Issue #15's pure rules: owner vs member from either spelling of Clerk's role, the setup texts an
onboarding tenant may send (and nothing else), and webhook drift as sync-webhooks sees it."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from nmc.identity import UserRole
from nmc.identity.clerk import user_role
from nmc.messaging import MessageKind, Send, SendFacts, Suppress, SuppressedReason, Wait, decide
from nmc.settings import load_settings
from nmc.telephony.twilio_numbers import IncomingNumber, WebhookUrls

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)  # 22:00 in New York: quiet hours


@pytest.mark.parametrize(
    ("role", "expected"),
    [("org:admin", UserRole.OWNER), ("admin", UserRole.OWNER), ("org:owner", UserRole.OWNER),
     ("org:member", UserRole.MEMBER), ("basic_member", UserRole.MEMBER), (None, UserRole.MEMBER)],
)  # fmt: skip
def test_owner_or_member(role: str | None, expected: UserRole) -> None:
    assert user_role(role) == expected


def facts(kind: MessageKind, status: str) -> SendFacts:
    return SendFacts(
        kind=kind,
        tenant_status=status,
        opted_out=False,
        landline=False,
        timezone="America/New_York",
        quiet_hours=(time(21, 0), time(8, 0)),
    )


def test_an_onboarding_tenant_sends_the_forwarding_code_at_any_hour_and_nothing_to_callers() -> None:
    assert isinstance(decide(facts(MessageKind.FORWARDING_CODE, "onboarding"), paused=False, now=NOW), Send)
    for kind in (MessageKind.FIRST_SMS, MessageKind.REPLY, MessageKind.OWNER_ALERT):
        assert decide(facts(kind, "onboarding"), paused=False, now=NOW) == Suppress(SuppressedReason.TENANT_INACTIVE)
    for status in ("deactivated", "inactive"):
        verdict = decide(facts(MessageKind.FORWARDING_CODE, status), paused=False, now=NOW)
        assert verdict == Suppress(SuppressedReason.TENANT_INACTIVE)
    assert isinstance(decide(facts(MessageKind.FIRST_SMS, "active"), paused=False, now=NOW), Wait)  # quiet hours
    assert isinstance(decide(facts(MessageKind.FORWARDING_CODE, "onboarding"), paused=True, now=NOW), Wait)


def test_drift_names_each_url_that_differs() -> None:
    wanted = WebhookUrls.for_settings(load_settings({"PUBLIC_BASE_URL": "https://new.example"}))
    number = IncomingNumber(
        sid="PN1",
        phone_number="+15125550001",
        friendly_name="nmc:t",
        voice_url="https://old.example/webhooks/twilio/voice",
        voice_method="post",
        status_callback="https://new.example/webhooks/twilio/voice/status",
        status_callback_method="POST",
        sms_url=None,
        sms_method="POST",
    )
    assert number.drift(wanted) == {
        "VoiceUrl": ("https://old.example/webhooks/twilio/voice", "https://new.example/webhooks/twilio/voice"),
        "SmsUrl": (None, "https://new.example/webhooks/twilio/sms"),
    }

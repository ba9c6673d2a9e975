"""Onboarding's checklist (issue #15) and its test call.

Telephony sits on top of the domain layers, so the checklist asks each owner through its face:
identity (the organisation, the numbers, forwarding verified, hours and timezone), billing (its
published `ENTITLED_SQL`: a trial or a subscription lets the tenant text), conversations (the messaging
settings saved), calendars (a calendar connected) and telephony itself (a test call made and its call
arrived). The tenant turns `active` when identity's `REQUIRED_STEPS` are done (identity decides that
when a number is added); the other steps are shown, not required: before `active` nothing is texted to
callers, after it the other gates (billing's entitlement, quiet hours, ...) still apply.

The test call: Twilio's Calls API calls the tenant's number from `TWILIO_TEST_CALL_FROM` (a number of
our own account) and waits on the line; the call arrives like any other (`/webhooks/twilio/voice`),
rings the forwarding number if verified, and when nobody answers is a missed call texted back to the
test line: the owner sees the first SMS in the inbox.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import asyncpg
import structlog

from nmc.billing import ENTITLED_SQL
from nmc.calendars import calendar_connected
from nmc.conversations import messaging_settings_saved
from nmc.identity import REQUIRED_STEPS, TenantNumber, TenantStatus, tenant_number, tenant_numbers, tenant_profile
from nmc.problems import Conflict, NotFound
from nmc.settings import get_settings
from nmc.telephony.numbers import TooSoon, TwilioFailed
from nmc.telephony.schemas import OnboardingRead, OnboardingStep, TestCallRead
from nmc.telephony.twilio_numbers import TwilioNumbers, TwilioRefused, TwilioUnavailable

log = structlog.get_logger(module="telephony")

TEST_CALL_EVERY = timedelta(minutes=1)
# The test line stays on while the number rings its forwarding number (20 s) and says its message.
TEST_CALL_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Pause length="40"/><Hangup/></Response>'

_ENTITLED = f"SELECT {ENTITLED_SQL.format(tenant='$1::uuid')}"
_TEST_CALL = """
    SELECT tc.created_at,
           EXISTS (SELECT 1 FROM conv_calls c
                   WHERE c.tenant_id = tc.tenant_id AND c.caller = tc.from_number AND c.tenant_number = tc.tenant_number
                     AND c.created_at >= tc.created_at) AS arrived
    FROM telephony_test_calls tc WHERE tc.tenant_id = $1 ORDER BY tc.created_at DESC LIMIT 1
"""
_RECORD_TEST_CALL = """
    INSERT INTO telephony_test_calls (id, tenant_id, call_sid, tenant_number, from_number, created_at)
    VALUES ($1, $2, $3, $4, $5, now())
"""
_RECENT_TEST_CALL = (
    "SELECT EXISTS (SELECT 1 FROM telephony_test_calls WHERE tenant_id = $1 AND created_at > now() - $2::interval)"
)


def _step(key: str, title: str, done: bool, detail: str | None = None) -> OnboardingStep:
    return OnboardingStep(key=key, title=title, done=done, required=key in REQUIRED_STEPS, detail=detail)


async def checklist(connection: asyncpg.Connection, tenant_id: UUID) -> OnboardingRead:
    profile = await tenant_profile(connection, tenant_id)
    if profile is None:
        raise NotFound("No such tenant")
    settings = get_settings()
    numbers = await tenant_numbers(connection, tenant_id)
    unverified = [n.twilio_number for n in numbers if n.forwarding_verified_at is None]
    entitled = bool(await connection.fetchval(_ENTITLED, tenant_id)) if settings.BILLING_ENABLED else True
    test_call = await connection.fetchrow(_TEST_CALL, tenant_id)
    steps = [
        _step("organization", "Organisation created", profile.status != TenantStatus.DEACTIVATED, profile.name),
        _step(
            "billing",
            "Trial or subscription",
            entitled,
            None if settings.BILLING_ENABLED else "billing is not enabled on this deployment",
        ),
        _step("number", "A phone number", bool(numbers), ", ".join(n.twilio_number for n in numbers) or None),
        _step(
            "forwarding_verified",
            "Forwarding number verified",
            bool(numbers) and not unverified,
            f"calls to {', '.join(unverified)} do not ring yet: enter the texted code" if unverified else None,
        ),
        _step("business_hours", "Business hours and timezone", profile.hours_set_at is not None, profile.timezone),
        _step("templates_reviewed", "Texts reviewed", await messaging_settings_saved(connection, tenant_id)),
        _step("calendar_connected", "Calendar connected", await calendar_connected(connection, tenant_id)),
        _step(
            "test_call",
            "Test call made",
            bool(test_call and test_call["arrived"]),
            None if test_call is None else ("arrived" if test_call["arrived"] else "placed, not arrived yet"),
        ),
    ]
    return OnboardingRead(
        status=profile.status,
        live=profile.status == TenantStatus.ACTIVE,
        steps=steps,
        required_open=[step.key for step in steps if step.required and not step.done],
    )


async def place_test_call(connection: asyncpg.Connection, tenant_id: UUID, number_id: UUID | None) -> TestCallRead:
    settings = get_settings()
    if not settings.TWILIO_TEST_CALL_FROM:
        raise Conflict("Test calls are not configured on this deployment (TWILIO_TEST_CALL_FROM)")
    number: TenantNumber | None
    if number_id is not None:
        number = await tenant_number(connection, tenant_id, number_id)
    else:
        number = next(iter(await tenant_numbers(connection, tenant_id)), None)
    if number is None:
        raise NotFound("No such number" if number_id else "Get a number first")
    if await connection.fetchval(_RECENT_TEST_CALL, tenant_id, TEST_CALL_EVERY):
        raise TooSoon(f"One test call per {int(TEST_CALL_EVERY.total_seconds())} seconds")
    try:
        sid = await TwilioNumbers(settings).create_call(
            to=number.twilio_number,
            from_=settings.TWILIO_TEST_CALL_FROM,
            twiml=TEST_CALL_TWIML,
            status_callback=None,
        )
    except TwilioUnavailable as exc:
        raise TwilioFailed("Twilio did not place the test call; try again") from exc
    except TwilioRefused as exc:
        raise Conflict(f"Twilio refused the test call: {exc.message}") from exc
    await connection.execute(
        _RECORD_TEST_CALL, uuid4(), tenant_id, sid, number.twilio_number, settings.TWILIO_TEST_CALL_FROM
    )
    log.info("onboarding.test_call", tenant_id=str(tenant_id), call_sid=sid, to=number.twilio_number)
    return TestCallRead(call_sid=sid, to=number.twilio_number, from_=settings.TWILIO_TEST_CALL_FROM)

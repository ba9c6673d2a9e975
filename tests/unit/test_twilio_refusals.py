"""Whose fault a Twilio refusal is, the decision while the sending circuit is open, how a body is
compared with Twilio's copy, and the console backend's SIDs (issue #10)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from email.utils import format_datetime

import pytest

from nmc.messaging import (
    CIRCUIT_REASON,
    MessageKind,
    MessageStatus,
    Probe,
    Send,
    SendFacts,
    SmsAccountRefused,
    SmsRateLimited,
    SmsRecipientRefused,
    SmsRejected,
    Suppress,
    Wait,
    decide,
)
from nmc.messaging.sending import rate_limit_wait
from nmc.messaging.sms import ConsoleSmsSender, comparable_body, refusal, retry_after_seconds

NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)  # 15:00 UTC, outside the default quiet hours in UTC
TWILIO_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")  # telephony's schemas


def facts(**changes: object) -> SendFacts:
    base: dict[str, object] = {
        "kind": MessageKind.FIRST_SMS,
        "tenant_status": "active",
        "opted_out": False,
        "landline": False,
        "timezone": "Etc/UTC",
        "quiet_hours": (time(21, 0), time(8, 0)),
    }
    return SendFacts(**{**base, **changes})  # type: ignore[arg-type]


# ------------------------------------------------------------------ classification
@pytest.mark.parametrize(
    ("http_status", "code", "kind"),
    [
        (429, 20429, SmsRateLimited),
        (401, 20003, SmsAccountRefused),
        (403, None, SmsAccountRefused),
        (400, 20005, SmsAccountRefused),  # account not active
        (400, 10001, SmsAccountRefused),
        (403, 20008, SmsAccountRefused),  # test credentials
        (400, 21610, SmsRecipientRefused),
        (400, 21211, SmsRecipientRefused),
        (400, 21614, SmsRecipientRefused),
        (400, 21612, SmsRecipientRefused),
        (400, 21408, SmsRecipientRefused),
        (400, 30006, SmsRecipientRefused),
        (400, 21606, SmsRejected),  # our From number: not the recipient's, not the account's
        (400, None, SmsRejected),
    ],
)
def test_a_refusal_is_classified_by_whose_fault_it_is(http_status: int, code: int | None, kind: type) -> None:
    refused = refusal(http_status, code, "message")
    assert type(refused) is kind
    assert (refused.http_status, refused.code, refused.text_may_exist) == (http_status, code, False)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    in_ten = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)
    assert 8 <= (retry_after_seconds(in_ten) or 0) <= 10
    assert isinstance(refusal(429, 20429, "slow down", "3"), SmsRateLimited)
    assert refusal(429, 20429, "slow down", "3").retry_after == 3.0  # type: ignore[attr-defined]


def test_a_rate_limit_waits_retry_after_within_bounds() -> None:
    assert rate_limit_wait(None) == timedelta(seconds=5)  # a few seconds when Twilio does not say
    assert rate_limit_wait(7) == timedelta(seconds=7)
    assert rate_limit_wait(0) == timedelta(seconds=1)
    assert rate_limit_wait(3600) == timedelta(seconds=60)  # capped


# ------------------------------------------------------------------ the decision and the circuit
def test_an_open_circuit_waits_until_the_next_probe() -> None:
    probe_at = NOW + timedelta(seconds=20)
    verdict = decide(facts(circuit_probe_at=probe_at), paused=False, now=NOW)
    assert verdict == Wait(MessageStatus.PAUSED, probe_at, CIRCUIT_REASON)


def test_a_due_probe_is_a_probe_and_a_closed_circuit_sends() -> None:
    assert isinstance(decide(facts(circuit_probe_at=NOW), paused=False, now=NOW), Probe)
    assert isinstance(decide(facts(circuit_probe_at=NOW - timedelta(minutes=5)), paused=False, now=NOW), Probe)
    assert decide(facts(), paused=False, now=NOW) == Send()


def test_the_circuit_comes_after_every_other_rung() -> None:
    due = NOW - timedelta(seconds=1)
    assert decide(facts(opted_out=True, circuit_probe_at=due), paused=False, now=NOW) == Suppress("opted_out")
    paused = decide(facts(circuit_probe_at=due), paused=True, now=NOW)
    assert isinstance(paused, Wait) and paused.reason != CIRCUIT_REASON
    night = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)  # quiet hours: a probe never breaks them
    quiet = decide(facts(kind=MessageKind.REPLY, circuit_probe_at=due), paused=False, now=night)
    assert isinstance(quiet, Wait) and quiet.status == MessageStatus.SCHEDULED
    alert = decide(facts(kind=MessageKind.OWNER_ALERT, circuit_probe_at=due), paused=False, now=night)
    assert isinstance(alert, Probe)  # exempt from quiet hours, so it may probe


# ------------------------------------------------------------------ bodies as Twilio stores them
def test_bodies_compare_the_way_twilio_may_have_changed_them() -> None:
    ours = "\u201cJoe\u2019s Plumbing\u201d \u2013 sorry we missed you\u2026 Reply STOP to opt out.\u00a0 "
    twilios = '"Joe\'s Plumbing" - sorry we missed you... Reply STOP to opt out.'
    assert comparable_body(ours) == comparable_body(twilios)
    assert comparable_body("Hello\u2014there ") == comparable_body("Hello-there")
    assert comparable_body("We can come at 3pm \U0001f44d") == comparable_body("We can come at 3pm \U0001f44d")
    assert comparable_body("On our way") != comparable_body("On our way!")


# ------------------------------------------------------------------ the console backend
async def test_console_sids_look_like_twilios_and_never_repeat_across_restarts() -> None:
    first_run, after_restart = ConsoleSmsSender(), ConsoleSmsSender()
    sids = [(await first_run.send("+15550001111", "+15550002222", f"text {i}")).sid for i in range(3)]
    sids += [(await after_restart.send("+15550001111", "+15550002222", f"text {i}")).sid for i in range(3)]
    assert len(set(sids)) == len(sids)
    assert all(TWILIO_SID.match(sid) for sid in sids)

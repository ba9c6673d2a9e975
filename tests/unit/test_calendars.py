"""Calendars' pure rules: which Google events are busy time, error classification, the OAuth state,
channel tokens and encryption under SECRET_KEY (with rotation), masking, the poll schedule."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest

from nmc.calendars import keys
from nmc.calendars.google import change_from, classify, event_id_for, missing_scopes
from nmc.calendars.provider import AuthRevoked, FullSyncRequired, NotFound, RateLimited, Refused, Unavailable
from nmc.calendars.service import masked
from nmc.calendars.sync import backoff_seconds, next_poll_in, renew_before
from nmc.settings import load_settings
from nmc.worker import calendar_poll_schedule

NY = ZoneInfo("America/New_York")
START = {"dateTime": "2026-12-10T10:00:00-05:00"}
END = {"dateTime": "2026-12-10T11:00:00-05:00"}


def event(**fields: Any) -> dict[str, Any]:
    return {"id": "abc123", "status": "confirmed", "start": START, "end": END, **fields}


def test_an_opaque_event_is_busy_over_its_instants() -> None:
    change = change_from(event(summary="Dentist"), NY)
    assert change is not None and change.busy and change.title == "Dentist"
    assert change.start == datetime(2026, 12, 10, 15, tzinfo=UTC) and change.end == datetime(
        2026, 12, 10, 16, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"transparency": "transparent"},
        {"eventType": "birthday"},
        {"eventType": "focusTime"},
        {"eventType": "workingLocation"},
        {"attendees": [{"email": "a@x.com", "self": True, "responseStatus": "declined"}]},
        {"extendedProperties": {"private": {"nmc_booking_id": "b"}}},
        {"end": START},  # empty
    ],
)
def test_free_kinds_of_event_are_not_busy(fields: dict[str, Any]) -> None:
    change = change_from(event(**fields), NY)
    assert change is not None and not change.busy


def test_out_of_office_and_gmail_events_and_others_declining_are_busy() -> None:
    assert change_from(event(eventType="outOfOffice"), NY).busy  # type: ignore[union-attr]
    assert change_from(event(eventType="fromGmail"), NY).busy  # type: ignore[union-attr]
    others = [{"email": "a@x.com", "responseStatus": "declined"}, {"email": "me@x.com", "self": True}]
    assert change_from(event(attendees=others), NY).busy  # type: ignore[union-attr]


def test_all_day_events_block_their_local_days() -> None:
    change = change_from(event(start={"date": "2026-12-10"}, end={"date": "2026-12-12"}), NY)
    assert change is not None and change.busy
    assert change.start == datetime(2026, 12, 10, tzinfo=NY) and change.end == datetime(2026, 12, 12, tzinfo=NY)


def test_a_time_without_offset_is_read_in_its_time_zone() -> None:
    naive = event(start={"dateTime": "2026-12-10T10:00:00", "timeZone": "Europe/Paris"},
                  end={"dateTime": "2026-12-10T11:00:00", "timeZone": "Europe/Paris"})  # fmt: skip
    change = change_from(naive, NY)
    assert change is not None and change.start == datetime(2026, 12, 10, 9, tzinfo=UTC)


def test_cancelled_rows_in_both_readings() -> None:
    parent = change_from({"id": "series1", "status": "cancelled"}, NY)
    assert parent is not None and not parent.busy and parent.series  # instances `series1_…` go too
    instance = {"id": "series1_20261210T150000Z", "status": "cancelled", "recurringEventId": "series1"}
    one = change_from(instance, NY)
    assert one is not None and not one.busy and not one.series
    assert change_from({"status": "confirmed"}, NY) is None


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def error(status: int, reason: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": reason, "errors": [{"domain": "global", "reason": reason}]}}


def test_errors_are_classified_by_whose_fault() -> None:
    assert isinstance(classify(response(400, {"error": "invalid_grant"}), "oauth.refresh"), AuthRevoked)
    assert isinstance(classify(response(401, error(401, "authError")), "events.list"), AuthRevoked)
    assert isinstance(classify(response(410, error(410, "fullSyncRequired")), "events.list"), FullSyncRequired)
    assert isinstance(classify(response(410, error(410, "deleted")), "events.delete"), NotFound)
    limited = classify(response(403, error(403, "userRateLimitExceeded"), {"Retry-After": "7"}), "events.list")
    assert isinstance(limited, RateLimited) and limited.retry_after == 7 and limited.retryable
    assert isinstance(classify(response(429, error(429, "rateLimitExceeded")), "freebusy"), RateLimited)
    assert isinstance(classify(response(403, error(403, "forbidden")), "events.list"), Refused)
    assert isinstance(classify(response(503, error(503, "backendError")), "events.list"), Unavailable)
    assert isinstance(classify(response(404, error(404, "notFound")), "events.list"), NotFound)


def test_scopes_the_owner_unticked_are_named() -> None:
    prefix = "https://www.googleapis.com/auth/"
    assert missing_scopes(frozenset({f"{prefix}calendar.events.owned", f"{prefix}calendar.freebusy"})) == []
    assert missing_scopes(frozenset({f"{prefix}calendar.events", f"{prefix}calendar.events.freebusy"})) == []
    assert missing_scopes(frozenset({f"{prefix}calendar.freebusy"})) == ["calendar.events.owned"]
    assert missing_scopes(frozenset()) == ["calendar.events.owned", "calendar.freebusy"]


def test_event_ids_are_base32hex_and_derived_from_the_booking() -> None:
    booking_id = uuid4()
    event_id = event_id_for(booking_id)
    assert event_id == event_id_for(booking_id) and 5 <= len(event_id) <= 1024
    assert set(event_id) <= set("0123456789abcdefghijklmnopqrstuv")


def test_the_oauth_state_is_signed_short_lived_and_bound(settings_env: Any) -> None:
    tenant, resource = uuid4(), uuid4()
    state, claims = keys.sign_state(
        tenant_id=tenant, user_id="user_1", resource_id=resource, provider="google", calendar_id="primary"
    )
    verified = keys.verify_state(state)
    assert (verified.tenant_id, verified.resource_id, verified.user_id, verified.nonce) == (
        tenant, resource, "user_1", claims.nonce,
    )  # fmt: skip
    payload, _, signature = state.partition(".")
    with pytest.raises(keys.BadState):
        keys.verify_state(payload + "." + signature[::-1])
    with pytest.raises(keys.BadState):
        keys.verify_state(state, now=time.time() + keys.STATE_TTL_SECONDS + 1)
    with pytest.raises(keys.BadState):
        keys.verify_state("garbage")
    settings_env(SECRET_KEY="a-new-key")
    with pytest.raises(keys.BadState):
        keys.verify_state(state)  # another deployment's key
    settings_env(SECRET_KEY_PREVIOUS="test-secret-key")
    assert keys.verify_state(state).nonce == claims.nonce  # during a rotation


def test_tokens_decrypt_under_the_previous_key_and_rotate(settings_env: Any) -> None:
    sealed = keys.encrypt("1//refresh-token")
    assert "refresh-token" not in sealed and keys.decrypt(sealed) == "1//refresh-token"
    settings_env(SECRET_KEY="rotated-key")
    with pytest.raises(keys.Undecryptable):
        keys.decrypt(sealed)
    settings_env(SECRET_KEY_PREVIOUS="test-secret-key")
    assert keys.decrypt(sealed) == "1//refresh-token"
    rotated = keys.reencrypt(sealed)
    settings_env(SECRET_KEY_PREVIOUS="")
    assert keys.decrypt(rotated) == "1//refresh-token"


def test_channel_tokens_are_per_channel(settings_env: Any) -> None:
    token = keys.channel_token("channel-1")
    assert keys.channel_token_valid("channel-1", token)
    assert not keys.channel_token_valid("channel-2", token)
    assert len(token) <= 256 and token != keys.channel_token("channel-2")
    settings_env(SECRET_KEY="rotated-key", SECRET_KEY_PREVIOUS="test-secret-key")
    assert keys.channel_token_valid("channel-1", token)


def test_errors_are_masked_before_they_are_stored() -> None:
    text = masked("google events.list: 403 for owner@example.com, token ya29.abcDEF-123, call +15551234567")
    assert "owner@example.com" not in text and "ya29.abc" not in text and "+15551234567" not in text
    assert len(masked("x" * 2000)) == 500


def test_poll_spread_backoff_and_renewal() -> None:
    settings = load_settings({"POLL_INTERVAL_GOOGLE_SECONDS": "60", "GOOGLE_WATCH_TTL_SECONDS": "604800"})
    assert all(45 <= next_poll_in("google", settings) <= 60 for _ in range(200))
    assert 15 <= backoff_seconds(0) <= 30 and 1800 <= backoff_seconds(20) <= 3600
    assert renew_before(settings) == 2 * 86400
    assert renew_before(load_settings({"GOOGLE_WATCH_TTL_SECONDS": "20"})) == 10
    assert calendar_poll_schedule(settings) == "* * * * *"
    assert calendar_poll_schedule(load_settings({"POLL_INTERVAL_GOOGLE_SECONDS": "5"})) == "* * * * * */5"


def test_calendar_settings_are_validated() -> None:
    from nmc.settings import SettingsError

    with pytest.raises(SettingsError, match="GOOGLE_FREEBUSY_TIMEOUT_SECONDS"):
        load_settings({"GOOGLE_FREEBUSY_TIMEOUT_SECONDS": "soon"})
    with pytest.raises(SettingsError, match="GOOGLE_OAUTH_BASE_URL"):
        load_settings({"GOOGLE_OAUTH_BASE_URL": "accounts.google.com"})
    with pytest.raises(SettingsError, match="CALENDAR_SYNC_FUTURE_DAYS"):
        load_settings({"CALENDAR_SYNC_FUTURE_DAYS": "0"})
    settings = load_settings({})
    assert settings.GOOGLE_TOKEN_BASE_URL == "https://oauth2.googleapis.com"
    assert settings.GOOGLE_REDIRECT_UI_URL == "" and settings.CALENDAR_SYNC_PAST_DAYS == 1
    assert date.today() - timedelta(days=1) < date.today()

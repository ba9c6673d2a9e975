"""Jobber's pure rules (issue #14): which visits are busy time (timed, all-day, unscheduled, completed,
cancelled), the cost-bucket wait, the token's claims, the webhook signature, the request marker, and
Jobber's settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest

from nmc.calendars.jobber import (
    Bucket,
    account_key,
    bucket_from,
    marker,
    throttle_wait,
    token_expiry,
    visit_change,
)
from nmc.calendars.webhooks import JOBBER_PUSH, jobber_signature
from nmc.settings import SettingsError, load_settings
from nmc.webhooks import RawDelivery
from tests.unit.test_settings import PRODUCTION_ENV

NY = ZoneInfo("America/New_York")


def visit(**fields: Any) -> dict[str, Any]:
    return {
        "id": "Z2lkOi8vVmlzaXQvMQ==",
        "title": "Furnace tune-up",
        "startAt": "2026-12-10T15:00:00Z",
        "endAt": "2026-12-10T16:30:00Z",
        "allDay": False,
        "completedAt": None,
        "visitStatus": "UPCOMING",
        "assignedUsers": {"nodes": [{"id": "U1"}, {"id": "U2"}]},
        **fields,
    }


def test_a_scheduled_visit_is_busy_for_its_assigned_users() -> None:
    change = visit_change(visit(), NY)
    assert change is not None and change.busy and change.title == "Furnace tune-up"
    assert change.start == datetime(2026, 12, 10, 15, tzinfo=UTC)
    assert change.end == datetime(2026, 12, 10, 16, 30, tzinfo=UTC)
    assert change.owners == ("U1", "U2")


@pytest.mark.parametrize(
    "fields",
    [
        {"visitStatus": "UNSCHEDULED", "startAt": None, "endAt": None},
        {"startAt": None},
        {"visitStatus": "COMPLETED", "completedAt": "2026-12-10T16:00:00Z"},
        {"completedAt": "2026-12-10T16:00:00Z"},  # completed, whatever the status says
        {"visitStatus": "CANCELLED"},
        {"endAt": "2026-12-10T15:00:00Z"},  # no length
    ],
)
def test_unscheduled_completed_and_cancelled_visits_are_free(fields: dict[str, Any]) -> None:
    change = visit_change(visit(**fields), NY)
    assert change is not None and not change.busy and change.owners == ("U1", "U2")


@pytest.mark.parametrize("status", ["ACTIVE", "LATE", "UPCOMING"])
def test_active_and_late_visits_still_block(status: str) -> None:
    change = visit_change(visit(visitStatus=status), NY)
    assert change is not None and change.busy


def test_an_all_day_visit_blocks_the_whole_local_day_in_the_tenants_zone() -> None:
    # The local day as Jobber gives it (offsets of the account's zone): midnight to midnight in New York.
    change = visit_change(
        visit(allDay=True, startAt="2026-12-10T00:00:00-05:00", endAt="2026-12-10T23:59:59-05:00"), NY
    )
    assert change is not None and change.busy
    assert change.start == datetime(2026, 12, 10, 5, tzinfo=UTC)
    assert change.end == datetime(2026, 12, 11, 5, tzinfo=UTC)
    # An exclusive end at the next local midnight, or bare dates, block the same day.
    for start, end in (("2026-12-10T05:00:00Z", "2026-12-11T05:00:00Z"), ("2026-12-10", "2026-12-10")):
        same = visit_change(visit(allDay=True, startAt=start, endAt=end), NY)
        assert same is not None and (same.start, same.end) == (change.start, change.end), (start, end)


@pytest.mark.parametrize("answer_zone", ["America/Chicago", "UTC", "America/Los_Angeles"])
def test_an_all_day_visit_in_another_offset_still_blocks_its_one_day(answer_zone: str) -> None:
    """The account's day (Chicago), read in whatever offset the answer uses, blocks that day in New York."""
    chicago = ZoneInfo("America/Chicago")
    begin = datetime(2026, 12, 10, tzinfo=chicago)
    finish = datetime(2026, 12, 10, 23, 59, 59, tzinfo=chicago)
    shown = ZoneInfo(answer_zone)
    change = visit_change(
        visit(allDay=True, startAt=begin.astimezone(shown).isoformat(), endAt=finish.astimezone(shown).isoformat()),
        NY,
    )
    assert change is not None
    assert (change.start, change.end) == (datetime(2026, 12, 10, 5, tzinfo=UTC), datetime(2026, 12, 11, 5, tzinfo=UTC))


def test_a_multi_day_all_day_visit_blocks_each_of_its_days() -> None:
    change = visit_change(visit(allDay=True, startAt="2026-12-10", endAt="2026-12-12"), NY)
    assert change is not None and (change.start, change.end) == (
        datetime(2026, 12, 10, 5, tzinfo=UTC),
        datetime(2026, 12, 13, 5, tzinfo=UTC),
    )
    timed = visit_change(visit(allDay=True, startAt="2026-12-10T00:00:00-05:00", endAt="2026-12-11T23:59:59-05:00"), NY)
    assert timed is not None and timed.end == datetime(2026, 12, 12, 5, tzinfo=UTC)


def test_an_all_day_visit_across_a_dst_change_keeps_local_midnights() -> None:
    for start, end in (("2026-11-01", "2026-11-01"), ("2026-11-01T00:00:00-04:00", "2026-11-01T23:59:59-05:00")):
        change = visit_change(visit(allDay=True, startAt=start, endAt=end), NY)
        assert change is not None
        assert change.start == datetime(2026, 11, 1, 4, tzinfo=UTC)  # EDT midnight
        assert change.end == datetime(2026, 11, 2, 5, tzinfo=UTC)  # EST midnight: a 25-hour day


def test_a_visit_without_users_blocks_nobody_and_one_without_id_is_skipped() -> None:
    change = visit_change(visit(assignedUsers={"nodes": []}), NY)
    assert change is not None and change.busy and change.owners == ()
    assert visit_change(visit(id=None), NY) is None


def test_the_throttle_wait_is_the_missing_points_over_the_restore_rate() -> None:
    assert throttle_wait(needed=1000, available=1000, restore_rate=500) == 0
    assert throttle_wait(needed=1000, available=4000, restore_rate=500) == 0
    assert throttle_wait(needed=1000, available=0, restore_rate=500) == 2.0
    assert throttle_wait(needed=6000, available=1000, restore_rate=500) == 10.0
    assert throttle_wait(needed=10, available=0, restore_rate=0) == float("inf")


def test_the_bucket_refills_at_its_restore_rate_up_to_its_maximum() -> None:
    extensions = {
        "cost": {
            "requestedQueryCost": 1802,
            "actualQueryCost": 950,
            "throttleStatus": {"maximumAvailable": 10000, "currentlyAvailable": 300, "restoreRate": 500},
        }
    }
    bucket, requested = bucket_from(extensions, now=100.0)
    assert requested == 1802
    assert bucket == Bucket(available=300, maximum=10000, restore_rate=500, seen_at=100.0)
    assert bucket.now_available(102.0) == 1300
    assert bucket.now_available(1000.0) == 10000
    assert bucket_from({}, now=1.0) == (None, None)


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(claims)}.signature"


def test_the_token_says_when_it_expires_and_whose_bucket_it_draws_on() -> None:
    token = _jwt({"exp": 1_900_000_000, "account_id": "A42"})
    assert token_expiry(token) == datetime.fromtimestamp(1_900_000_000, UTC)
    assert account_key(token) == "account:A42"
    assert account_key("opaque").startswith("token:")
    assert token_expiry("opaque", 60) > datetime.now(UTC)


def test_the_webhook_signature_is_base64_hmac_sha256_of_the_raw_body(settings_env: Any) -> None:
    settings_env(JOBBER_CLIENT_SECRET="jobber-secret")
    body = b'{"data":{"webHookEvent":{"topic":"VISIT_UPDATE","accountId":"A1","itemId":"V1"}}}'
    expected = base64.b64encode(hmac.new(b"jobber-secret", body, hashlib.sha256).digest()).decode()
    assert jobber_signature(body, "jobber-secret") == expected

    def delivery(signature: str, raw: bytes = body) -> RawDelivery:
        return RawDelivery(url="http://x/webhooks/jobber", headers={"x-jobber-hmac-sha256": signature}, body=raw)

    assert JOBBER_PUSH.verify(delivery(expected)) is None
    refused = JOBBER_PUSH.verify(delivery(expected, body + b" "))  # re-serialised bodies do not match
    assert refused is not None and refused.status == 401
    assert JOBBER_PUSH.verify(delivery("")) is not None
    settings_env(JOBBER_CLIENT_SECRET="")
    assert JOBBER_PUSH.verify(delivery(jobber_signature(body, ""))) is not None  # no secret: nothing accepted


def test_the_marker_carries_the_booking_id() -> None:
    booking_id = uuid4()
    assert marker(booking_id) == f"[nmc:{booking_id.hex}]"


def test_jobber_settings_are_validated_and_required_only_when_enabled() -> None:
    settings = load_settings({})
    assert settings.JOBBER_OAUTH_URL == "https://api.getjobber.com/api/oauth"
    assert settings.JOBBER_GRAPHQL_VERSION == "2025-01-20"
    with pytest.raises(SettingsError, match=r"^JOBBER_GRAPHQL_VERSION:"):
        load_settings({"JOBBER_GRAPHQL_VERSION": "latest"})
    with pytest.raises(SettingsError, match=r"^JOBBER_OAUTH_URL:"):
        load_settings({"JOBBER_OAUTH_URL": "api.getjobber.com"})
    assert load_settings(PRODUCTION_ENV).JOBBER_CLIENT_ID == ""  # Jobber off: nothing required
    with pytest.raises(SettingsError, match=r"^JOBBER_CLIENT_SECRET: .*Jobber is enabled"):
        load_settings({**PRODUCTION_ENV, "JOBBER_CLIENT_ID": "id"})
    both = load_settings({**PRODUCTION_ENV, "JOBBER_CLIENT_ID": "id", "JOBBER_CLIENT_SECRET": "s"})
    assert both.JOBBER_CLIENT_SECRET == "s"

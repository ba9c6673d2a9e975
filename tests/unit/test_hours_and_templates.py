from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from nmc.conversations.templates import (
    DEFAULT_FIRST_SMS_AFTER_HOURS,
    DEFAULT_FIRST_SMS_BUSINESS_HOURS,
    STOP_NOTICE,
    MergeValues,
    UnknownMergeField,
    check_template,
    render,
)
from nmc.messaging.quiet_hours import quiet_until
from nmc.observability.logging import mask_phone
from nmc.weekly_hours import open_at

HOURS = {"mon": [["08:00", "12:00"], ["13:00", "17:00"]], "sat": [], "sun": []}
VALUES = MergeValues(business_name="Joe's Plumbing", caller_number="+15551234567", booking_prompt="Reply BOOK.")


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        (datetime(2026, 11, 23, 14, 0, tzinfo=UTC), True),  # Monday 09:00 in New York
        (datetime(2026, 11, 23, 17, 30, tzinfo=UTC), False),  # Monday 12:30: lunch gap
        (datetime(2026, 11, 23, 22, 0, tzinfo=UTC), False),  # Monday 17:00: closed (end is exclusive)
        (datetime(2026, 11, 28, 15, 0, tzinfo=UTC), False),  # Saturday
    ],
)
def test_business_hours_in_the_tenant_zone(utc: datetime, expected: bool) -> None:
    assert open_at(HOURS, ZoneInfo("America/New_York"), utc) is expected


@pytest.mark.parametrize(
    ("utc", "expected"),
    [
        (datetime(2026, 11, 24, 3, 0, tzinfo=UTC), True),  # Monday 22:00 in New York
        (datetime(2026, 11, 24, 6, 59, tzinfo=UTC), True),  # Tuesday 01:59: Monday's night still runs
        (datetime(2026, 11, 24, 7, 0, tzinfo=UTC), False),  # Tuesday 02:00: closed (end is exclusive)
        (datetime(2026, 11, 24, 2, 59, tzinfo=UTC), False),  # Monday 21:59
        (datetime(2026, 11, 25, 4, 0, tzinfo=UTC), True),  # Tuesday 23:00, a range up to midnight
        (datetime(2026, 11, 23, 6, 0, tzinfo=UTC), False),  # Monday 01:00: Sunday has no night range
    ],
)
def test_overnight_business_hours_run_into_the_next_day(utc: datetime, expected: bool) -> None:
    hours = {"mon": [["22:00", "02:00"]], "tue": [["20:00", "24:00"]]}
    assert open_at(hours, ZoneInfo("America/New_York"), utc) is expected


def test_quiet_hours_wrap_midnight_and_end_in_the_tenant_zone() -> None:
    start, end = time(21, 0), time(8, 0)
    # 23:00 in New York (UTC-5 in November) → quiet until 08:00 local next day = 13:00 UTC
    late = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
    assert quiet_until(start, end, "America/New_York", late) == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    # 06:00 local → same-day 08:00 local
    early = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    assert quiet_until(start, end, "America/New_York", early) == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    # 12:00 local → not quiet
    assert quiet_until(start, end, "America/New_York", datetime(2026, 11, 24, 17, 0, tzinfo=UTC)) is None


def test_quiet_hours_window_within_one_day_and_disabled() -> None:
    noon = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
    assert quiet_until(time(12, 0), time(13, 0), "UTC", noon) == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    assert quiet_until(None, None, "UTC", noon) is None
    assert quiet_until(time(9, 0), time(9, 0), "UTC", noon) is None


def test_quiet_hours_across_the_spring_dst_change() -> None:
    # 2026-03-08: New York springs forward at 02:00; 23:00 EST on the 7th → 08:00 EDT = 12:00 UTC
    at = datetime(2026, 3, 8, 4, 0, tzinfo=UTC)
    assert quiet_until(time(21, 0), time(8, 0), "America/New_York", at) == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def test_broken_zone_raises_for_the_caller_to_fail_open() -> None:
    with pytest.raises(KeyError):
        quiet_until(time(21, 0), time(8, 0), "Not/AZone", datetime.now(UTC))


def test_default_templates_fill_and_end_with_the_stop_notice() -> None:
    for template in (DEFAULT_FIRST_SMS_BUSINESS_HOURS, DEFAULT_FIRST_SMS_AFTER_HOURS):
        text = render(check_template(template), VALUES)
        assert "Joe's Plumbing" in text and "Reply BOOK." in text
        assert text.endswith(STOP_NOTICE)
        assert "{" not in text


def test_unknown_merge_field_is_named() -> None:
    with pytest.raises(UnknownMergeField) as caught:
        check_template("Hi {first_name}, this is {business_name}")
    assert caught.value.field == "first_name"
    with pytest.raises(UnknownMergeField):
        check_template("unbalanced {business_name")


def test_phone_masking_keeps_prefix_and_last_four() -> None:
    assert mask_phone("+15551234567") == "+1555***4567"
    assert "1234567" not in mask_phone("+15551234567")


def test_business_hours_follow_the_same_rule_as_working_hours() -> None:
    from nmc.identity.service import check_business_hours
    from nmc.problems import InvalidField

    checked = check_business_hours({"mon": [["22:00", "02:00"], ["08:00", "12:00"]]})
    assert checked["mon"] == [["08:00", "12:00"], ["22:00", "02:00"]] and checked["sun"] == []
    with pytest.raises(InvalidField) as caught:
        check_business_hours({"tue": [["09:00", "09:00"]]})
    assert caught.value.field == "business_hours.tue"
    with pytest.raises(InvalidField) as caught:
        check_business_hours({"funday": []})
    assert caught.value.field == "business_hours"

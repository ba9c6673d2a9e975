"""Billing's pure rules: SMS segments (GSM-7 / UCS-2), the entitlement, both shapes of Stripe objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nmc.billing import EntitlementReason, count_segments
from nmc.billing.entitlement import entitlement_for
from nmc.billing.service import invoice_subscription_id, subscription_state

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
GRACE = timedelta(days=7)


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),  # GSM-7: 160 septets in one
        ("a" * 161, 2),  # then 153 per part
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # an extension character is two septets
        ("€" * 81, 2),
        ("a" * 152 + "€" + "a" * 10, 2),  # the escape pair is not split: 152 + 2 > 153
        ("Joe\u2019s Plumbing \u2013 we\u2019ll call you back\u2026", 1),  # smart encoding keeps it GSM-7
        ("ü" * 160, 1),  # in the GSM alphabet
        ("ł" * 70, 1),  # UCS-2: 70 in one
        ("ł" * 71, 2),  # then 67 per part
        ("ł" * 134, 2),
        ("ł" * 135, 3),
        ("🙂" * 35, 1),  # a surrogate pair is two UTF-16 units
        ("🙂" * 36, 2),
        ("a" * 66 + "🙂", 1),  # 68 units in one segment
        ("a" * 66 + "🙂" + "a" * 4, 2),  # 72 units: 66 + 🙂 would split at 67, so it moves on
    ],
)
def test_segments(body: str, segments: int) -> None:
    assert count_segments(body) == segments


def test_without_smart_encoding_a_curly_quote_is_ucs2() -> None:
    body = "Joe\u2019s " + "a" * 70
    assert count_segments(body) == 1
    assert count_segments(body, smart_encoding=False) == 2


def _entitlement(status: str, **kwargs: object) -> object:
    defaults: dict[str, object] = {
        "has_subscription": True,
        "trial_end": None,
        "past_due_since": None,
        "grace": GRACE,
        "now": NOW,
    }
    return entitlement_for(status, **{**defaults, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "enabled", "reason"),
    [
        ("trialing", True, EntitlementReason.TRIALING),
        ("active", True, EntitlementReason.ACTIVE),
        ("canceled", False, EntitlementReason.CANCELED),
        ("unpaid", False, EntitlementReason.UNPAID),
        ("incomplete", False, EntitlementReason.INCOMPLETE),
        ("incomplete_expired", False, EntitlementReason.INCOMPLETE_EXPIRED),
        ("paused", False, EntitlementReason.PAUSED),
        ("something_new", False, EntitlementReason.UNKNOWN_STATUS),
    ],
)
def test_entitlement_by_status(status: str, enabled: bool, reason: EntitlementReason) -> None:
    result = _entitlement(status)
    assert (result.enabled, result.reason, result.until) == (enabled, reason, None)  # type: ignore[attr-defined]


def test_past_due_is_on_for_the_grace_period_then_off() -> None:
    within = _entitlement("past_due", past_due_since=NOW - timedelta(days=2))
    assert within.enabled and within.reason == EntitlementReason.GRACE  # type: ignore[attr-defined]
    assert within.until == NOW + timedelta(days=5)  # type: ignore[attr-defined]
    over = _entitlement("past_due", past_due_since=NOW - timedelta(days=8))
    assert not over.enabled and over.reason == EntitlementReason.GRACE_OVER  # type: ignore[attr-defined]
    no_grace = _entitlement("past_due", past_due_since=NOW, grace=timedelta(0))
    assert not no_grace.enabled  # type: ignore[attr-defined]


def test_our_own_trial_is_on_until_it_ends() -> None:
    running = _entitlement("trialing", has_subscription=False, trial_end=NOW + timedelta(days=3))
    assert running.enabled and running.until == NOW + timedelta(days=3)  # type: ignore[attr-defined]
    ended = _entitlement("trialing", has_subscription=False, trial_end=NOW - timedelta(seconds=1))
    assert not ended.enabled and ended.reason == EntitlementReason.TRIAL_ENDED  # type: ignore[attr-defined]


def test_subscription_periods_on_the_items_or_on_the_subscription() -> None:
    start, end = 1_790_000_000, 1_792_592_000
    newer = {
        "id": "sub_1",
        "customer": "cus_1",
        "status": "active",
        "items": {
            "data": [
                {"price": {"id": "price_texts", "recurring": {"usage_type": "metered"}}, "current_period_end": end},
                {
                    "price": {"id": "price_plan", "recurring": {"usage_type": "licensed"}},
                    "current_period_start": start,
                    "current_period_end": end,
                },
            ]
        },
    }
    older = {
        "id": "sub_1",
        "customer": {"id": "cus_1", "object": "customer"},
        "status": "active",
        "current_period_start": start,
        "current_period_end": end,
        "items": {"data": [{"price": {"id": "price_plan"}}]},
    }
    for shape in (newer, older):
        state = subscription_state(shape)
        assert state.price_id == "price_plan" and state.customer == "cus_1"
        assert state.current_period_start == datetime.fromtimestamp(start, UTC)
        assert state.current_period_end == datetime.fromtimestamp(end, UTC)


def test_an_invoices_subscription_in_both_shapes() -> None:
    assert invoice_subscription_id({"subscription": "sub_1"}) == "sub_1"
    assert invoice_subscription_id({"parent": {"subscription_details": {"subscription": "sub_2"}}}) == "sub_2"
    assert invoice_subscription_id({"subscription": None, "parent": None}) is None

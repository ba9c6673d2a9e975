"""The booking dialog's rules, transition by transition: what each text means and what each state does with it."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from nmc.booking_by_sms.dialog import (
    MAX_REPROMPTS,
    TRANSITIONS,
    Action,
    DialogState,
    Intent,
    Reading,
    decide,
    offers_text,
    prompt_keyword,
    read,
    reprompt_text,
    when,
)

IDLE, OFFERED, HELD, BOOKED = DialogState
STATES = tuple(DialogState)

BOOK = Reading(Intent.BOOK)
MORE = Reading(Intent.MORE)
YES = Reading(Intent.YES)
NO = Reading(Intent.NO)
UNCLEAR = Reading(Intent.UNCLEAR)


def choice(n: int) -> Reading:
    return Reading(Intent.CHOICE, n)


@pytest.mark.parametrize(
    ("state", "reading", "action"),
    [
        (IDLE, BOOK, Action.OFFER),
        (IDLE, MORE, Action.IGNORE),
        (IDLE, choice(1), Action.IGNORE),
        (IDLE, YES, Action.IGNORE),
        (IDLE, NO, Action.IGNORE),
        (IDLE, UNCLEAR, Action.IGNORE),
        (OFFERED, BOOK, Action.OFFER),
        (OFFERED, MORE, Action.OFFER_LATER),
        (OFFERED, choice(1), Action.HOLD),
        (OFFERED, choice(3), Action.HOLD),
        (OFFERED, choice(4), Action.REPROMPT),
        (OFFERED, YES, Action.REPROMPT),
        (OFFERED, NO, Action.DECLINE),
        (OFFERED, UNCLEAR, Action.REPROMPT),
        (HELD, BOOK, Action.OFFER),
        (HELD, MORE, Action.OFFER_LATER),
        (HELD, choice(2), Action.HOLD),
        (HELD, choice(9), Action.REPROMPT),
        (HELD, YES, Action.CONFIRM),
        (HELD, NO, Action.RELEASE),
        (HELD, UNCLEAR, Action.REPROMPT),
        (BOOKED, BOOK, Action.IGNORE),
        (BOOKED, YES, Action.IGNORE),
        (BOOKED, choice(1), Action.IGNORE),
        (BOOKED, UNCLEAR, Action.IGNORE),
    ],
)
def test_each_transition(state: str, reading: Reading, action: Action) -> None:
    assert decide(state, reading, offered=3, reprompts=0) is action


def test_every_state_and_intent_pair_is_decided() -> None:
    for state in STATES:
        for intent in Intent:
            action = decide(state, Reading(intent, 1 if intent is Intent.CHOICE else None), offered=3, reprompts=0)
            assert action in Action
    assert {state for state, _ in TRANSITIONS} == {IDLE, OFFERED, HELD}  # booked is final


@pytest.mark.parametrize("state", [OFFERED, HELD])
def test_reprompts_stop_at_the_limit(state: str) -> None:
    assert decide(state, UNCLEAR, offered=3, reprompts=MAX_REPROMPTS - 1) is Action.REPROMPT
    assert decide(state, UNCLEAR, offered=3, reprompts=MAX_REPROMPTS) is Action.IGNORE
    assert decide(state, choice(1), offered=3, reprompts=MAX_REPROMPTS) is Action.HOLD  # a choice still works


def test_a_choice_beyond_the_offers_made_is_unclear() -> None:
    assert decide(OFFERED, choice(2), offered=1, reprompts=0) is Action.REPROMPT
    assert decide(OFFERED, choice(1), offered=1, reprompts=0) is Action.HOLD


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("1", choice(1)),
        (" 2. ", choice(2)),
        ("#3", choice(3)),
        ("option 2", choice(2)),
        ("2)", choice(2)),
        ("YES", YES),
        ("yes!", YES),
        ("Yes, please", YES),
        ("ok", YES),
        ("confirm", YES),
        ("No", NO),
        ("no thanks", NO),
        ("more", MORE),
        ("Other times", MORE),
        ("BOOK", BOOK),
        ("book", BOOK),
        ("Can I book an appointment?", BOOK),
        ("what's your availability", BOOK),
        ("12", UNCLEAR),
        ("3pm works", UNCLEAR),
        ("my sink leaks", UNCLEAR),
        ("cancel", UNCLEAR),  # an opt-out keyword, never "no"
        ("", UNCLEAR),
    ],
)
def test_reading_a_text(body: str, expected: Reading) -> None:
    assert read(body) == expected


def test_the_prompts_keyword_asks_to_book() -> None:
    assert prompt_keyword("Reply VISIT to get a time.") == "VISIT"
    assert prompt_keyword("Text SLOT for times") == "SLOT"
    assert prompt_keyword("Call us anytime") is None
    assert read("visit", "VISIT") == BOOK
    assert read("visit") == UNCLEAR


def test_times_read_as_a_person_says_them() -> None:
    zone = ZoneInfo("America/New_York")
    assert when(datetime(2026, 12, 1, 15, 0, tzinfo=zone)) == "Tue Dec 1, 3:00 PM"
    assert when(datetime(2026, 12, 1, 0, 30, tzinfo=zone)) == "Tue Dec 1, 12:30 AM"
    assert when(datetime(2026, 12, 1, 12, 5, tzinfo=zone)) == "Tue Dec 1, 12:05 PM"


def test_offer_and_reprompt_texts_name_the_choices() -> None:
    zone = ZoneInfo("America/New_York")
    starts = [datetime(2026, 12, 1, h, tzinfo=zone) for h in (8, 9, 10)]
    text = offers_text("Joe's Plumbing", starts)
    assert text == (
        "Joe's Plumbing can come: 1) Tue Dec 1, 8:00 AM 2) Tue Dec 1, 9:00 AM 3) Tue Dec 1, 10:00 AM. "
        "Reply 1, 2 or 3 to pick a time, or MORE for later times."
    )
    assert len(text) <= 160  # one SMS segment
    assert "Reply 1 to pick" in offers_text("Joe's", starts[:1])
    assert "Reply 1 or 2 to pick" in offers_text("Joe's", starts[:2])
    assert reprompt_text(OFFERED, None, 3).startswith("Sorry, I didn't get that. Reply 1, 2 or 3")
    assert reprompt_text(HELD, starts[0], 3) == "Reply YES to confirm Tue Dec 1, 8:00 AM, or NO to let it go."

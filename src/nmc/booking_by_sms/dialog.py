"""Booking by SMS, the rules: what a caller's text means in each state, and what we say back.

The state machine is the `TRANSITIONS` table: (state, intent) → action. A pair that is not in it is
not for the booking dialog (the owner answers it in the inbox). `nmc.conversations.booking_by_sms`
carries the actions out against the database; everything here is pure.

    idle    --BOOK-->            offered   (the next open times; none → idle)
    offered --1|2|3-->           held      (taken meanwhile → offered, fresh times)
    offered --MORE-->            offered   (later times)
    offered --NO-->              idle
    held    --YES-->             booked    (the hold expired → offered, fresh times)
    held    --1|2|3-->           held      (the other time; the first hold is let go)
    held    --NO-->              idle      (the hold is let go)
    held    --BOOK|MORE-->       offered   (the hold is let go)
    offered|held --unclear-->    same      (a re-prompt, at most MAX_REPROMPTS in a row)
    held    --hold expired-->    offered   (fresh times)

YES is also Twilio's opt-in keyword: it confirms only while a hold waits (for an opted-out caller it
is an opt-in, and inbound handling reports it as such, so the dialog never sees it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DialogState(StrEnum):
    IDLE = "idle"
    OFFERED = "offered"
    HELD = "held"
    BOOKED = "booked"


OFFER_COUNT = 3
MAX_REPROMPTS = 2


class Intent(StrEnum):
    BOOK = "book"
    MORE = "more"
    CHOICE = "choice"
    YES = "yes"
    NO = "no"
    UNCLEAR = "unclear"


class Action(StrEnum):
    OFFER = "offer"  # text the next open times (letting a hold go first)
    OFFER_LATER = "offer_later"  # text the open times after the last ones offered
    HOLD = "hold"  # hold the chosen time (letting a previous hold go first) and ask to confirm
    CONFIRM = "confirm"  # book the hold and confirm by text
    RELEASE = "release"  # let the hold go and say so
    DECLINE = "decline"  # no time wanted: say how to come back
    REPROMPT = "reprompt"  # say what we expect
    IGNORE = "ignore"  # not for the dialog: the owner answers


TRANSITIONS: dict[tuple[str, Intent], Action] = {
    (DialogState.IDLE, Intent.BOOK): Action.OFFER,
    (DialogState.OFFERED, Intent.BOOK): Action.OFFER,
    (DialogState.OFFERED, Intent.MORE): Action.OFFER_LATER,
    (DialogState.OFFERED, Intent.CHOICE): Action.HOLD,
    (DialogState.OFFERED, Intent.YES): Action.REPROMPT,  # a time must be picked first
    (DialogState.OFFERED, Intent.NO): Action.DECLINE,
    (DialogState.OFFERED, Intent.UNCLEAR): Action.REPROMPT,
    (DialogState.HELD, Intent.BOOK): Action.OFFER,
    (DialogState.HELD, Intent.MORE): Action.OFFER_LATER,
    (DialogState.HELD, Intent.CHOICE): Action.HOLD,
    (DialogState.HELD, Intent.YES): Action.CONFIRM,
    (DialogState.HELD, Intent.NO): Action.RELEASE,
    (DialogState.HELD, Intent.UNCLEAR): Action.REPROMPT,
}
_BOOK_WORDS = re.compile(
    r"\b(book|booking|appointment|appt|schedule|availability|available|opening|openings|slot|slots)\b", re.I
)
_CHOICE = re.compile(r"^\s*(?:#|no\.?\s*|option\s*|number\s*)?([1-9])\s*[.!)]?\s*$", re.I)
_MORE = frozenset({"MORE", "OTHER", "OTHERS", "LATER", "NEXT", "MORE TIMES", "OTHER TIMES"})
_YES = frozenset({"YES", "Y", "YEP", "YEAH", "YES PLEASE", "CONFIRM", "OK", "OKAY", "SURE", "SOUNDS GOOD"})
# CANCEL is an opt-out keyword (it opts the caller out), never a "no" here.
_NO = frozenset({"NO", "N", "NOPE", "NO THANKS", "NOT NOW", "NEVERMIND", "NEVER MIND"})
_PROMPT_KEYWORD = re.compile(r"\b(?i:reply|text)\s+([A-Z]{2,})\b")


def prompt_keyword(booking_prompt: str | None) -> str | None:
    """The keyword a tenant's booking prompt asks for ("Reply BOOK to ..." → BOOK), if it names one."""
    found = _PROMPT_KEYWORD.search(booking_prompt or "")
    return found.group(1) if found else None


@dataclass(frozen=True)
class Reading:
    intent: Intent
    choice: int | None = None  # 1-based, for CHOICE


def read(body: str, keyword: str | None = None) -> Reading:
    """What a caller's text asks the booking dialog for."""
    said = " ".join(re.sub(r"[^\w\s#.!)]", " ", body).split()).upper().rstrip(".!")
    if found := _CHOICE.match(said):
        return Reading(Intent.CHOICE, int(found.group(1)))
    if said in _YES:
        return Reading(Intent.YES)
    if said in _NO:
        return Reading(Intent.NO)
    if said in _MORE:
        return Reading(Intent.MORE)
    if (keyword and said == keyword.upper()) or _BOOK_WORDS.search(said):
        return Reading(Intent.BOOK)
    return Reading(Intent.UNCLEAR)


def decide(state: DialogState, reading: Reading, *, offered: int, reprompts: int) -> Action:
    """The action for a reading in a state (`offered`: how many times are on offer)."""
    action = TRANSITIONS.get((state, reading.intent), Action.IGNORE)
    if action is Action.HOLD and not (reading.choice and 1 <= reading.choice <= offered):
        action = Action.REPROMPT
    if action is Action.REPROMPT and reprompts >= MAX_REPROMPTS:
        return Action.IGNORE
    return action


# ---------------------------------------------------------------------------- what we say
def when(at: datetime) -> str:
    """`Tue Dec 1, 3:00 PM` (in the zone `at` carries)."""
    hour = at.hour % 12 or 12
    return f"{at:%a %b} {at.day}, {hour}:{at.minute:02d} {'AM' if at.hour < 12 else 'PM'}"


def offers_text(business_name: str, starts: list[datetime], *, lead: str = "") -> str:
    listed = " ".join(f"{n}) {when(start)}" for n, start in enumerate(starts, 1))
    choices = ", ".join(str(n) for n in range(1, len(starts))) + f" or {len(starts)}" if len(starts) > 1 else "1"
    return f"{lead}{business_name} can come: {listed}. Reply {choices} to pick a time, or MORE for later times."


def no_times_text(business_name: str, *, lead: str = "") -> str:
    return f"{lead}{business_name} has no open times to offer by text right now. We'll get back to you to set one up."


def not_set_up_text(business_name: str) -> str:
    return f"Thanks! {business_name} will text you back shortly to set up a time."


def held_text(start: datetime, ttl_minutes: int) -> str:
    return f"{when(start)} is held for you for {ttl_minutes} minutes. Reply YES to confirm, or NO to let it go."


def booked_text(business_name: str, start: datetime) -> str:
    return f"You're booked with {business_name} for {when(start)}. See you then!"


def released_text() -> str:
    return "OK, that time is released. Reply BOOK anytime to see open times."


def declined_text() -> str:
    return "No problem. Reply BOOK anytime to see open times."


def reprompt_text(state: DialogState, hold_start: datetime | None, offered: int) -> str:
    if state == DialogState.HELD and hold_start is not None:
        return f"Reply YES to confirm {when(hold_start)}, or NO to let it go."
    choices = ", ".join(str(n) for n in range(1, offered)) + f" or {offered}" if offered > 1 else "1"
    return f"Sorry, I didn't get that. Reply {choices} to pick a time, MORE for later times, or NO."


TAKEN_LEAD = "Sorry, that time is no longer available. "
EXPIRED_LEAD = "Sorry, that hold ran out. "


def expired_lead(hold_start: datetime | None) -> str:
    return f"Your hold on {when(hold_start)} ran out. " if hold_start is not None else EXPIRED_LEAD

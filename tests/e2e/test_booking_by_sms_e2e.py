"""Booking by SMS with the real web and worker processes and the fake Twilio API: a caller books in the
thread the missed call started; two callers race for one time by SMS and one of them gets it."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_conversation_e2e import Shop, make_shop, texts_to, wait_for_texts
from tests.fakes.clerk import FakeClerk
from tests.processes import Stack

pytestmark = pytest.mark.e2e
CALLER = "+15557653333"
RIVAL = "+15557654444"
ALL_DAY = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


async def bookable_shop(stack: Stack, clerk: FakeClerk) -> Shop:
    shop = await make_shop(stack, clerk)
    assert shop.api("POST", "/resources", json={"name": "Ana", "weekly_hours": ALL_DAY}).status_code == 201
    job_type = {"name": "Repair", "duration_minutes": 60, "min_notice_minutes": 0}
    assert shop.api("POST", "/job-types", json=job_type).status_code == 201
    return shop


async def reply_to(shop: Shop, fake_twilio: Any, caller: str, body: str) -> str:
    """The caller texts `body`; the next text the caller gets back."""
    before = len(texts_to(fake_twilio, caller))
    shop.text_in(caller, body)
    texts = await wait_for_texts(fake_twilio, caller, before + 1)
    return str(texts[before]["form"]["Body"])


async def asked_to_book(shop: Shop, fake_twilio: Any, caller: str) -> str:
    """A missed call from `caller`, its first SMS, then BOOK: the offer text."""
    assert shop.missed_call(caller).status_code == 200
    [first] = await wait_for_texts(fake_twilio, caller, 1)
    assert "Reply BOOK" in first["form"]["Body"]
    return await reply_to(shop, fake_twilio, caller, "BOOK")


def offered_times(text: str) -> list[str]:
    return re.findall(r"\d\) (\w{3} \w{3} \d+, \d+:\d\d [AP]M)", text)


async def test_a_caller_books_by_sms(stack: Stack, db: asyncpg.Connection, fake_twilio: Any, clerk: FakeClerk) -> None:
    shop = await bookable_shop(stack, clerk)
    offer = await asked_to_book(shop, fake_twilio, CALLER)
    times = offered_times(offer)
    assert len(times) == 3 and "Reply 1, 2 or 3" in offer, offer

    held = await reply_to(shop, fake_twilio, CALLER, "2")
    assert held == f"{times[1]} is held for you for 15 minutes. Reply YES to confirm, or NO to let it go."
    booked = await reply_to(shop, fake_twilio, CALLER, "YES")
    assert booked.startswith("You're booked with") and times[1] in booked

    [booking] = shop.api("GET", "/bookings").json()
    assert booking["source"] == "sms" and booking["customer_phone"] == CALLER and booking["status"] == "confirmed"

    async def thread_booked() -> bool:
        return await db.fetchval("SELECT status FROM conv_threads WHERE caller = $1", CALLER) == "booked"

    await wait_for(thread_booked)
    texts = texts_to(fake_twilio, CALLER)
    assert len(texts) == 4 and all(t["form"]["From"] == shop.number for t in texts)


async def test_two_callers_race_for_one_time_by_sms(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, clerk: FakeClerk
) -> None:
    shop = await bookable_shop(stack, clerk)
    first_offer, rival_offer = await asyncio.gather(
        asked_to_book(shop, fake_twilio, CALLER), asked_to_book(shop, fake_twilio, RIVAL)
    )
    contested = offered_times(first_offer)[0]
    assert offered_times(rival_offer)[0] == contested

    # Both pick the same time at once: the worker handles the two texts concurrently.
    answers = await asyncio.gather(reply_to(shop, fake_twilio, CALLER, "1"), reply_to(shop, fake_twilio, RIVAL, "1"))
    winners = [i for i, text in enumerate(answers) if text.startswith(f"{contested} is held for you")]
    losers = [i for i, text in enumerate(answers) if text.startswith("Sorry, that time is no longer available.")]
    assert len(winners) == 1 and len(losers) == 1, answers
    loser_text = answers[losers[0]]
    fresh = offered_times(loser_text)
    assert len(fresh) == 3 and contested not in fresh and "Reply 1, 2 or 3" in loser_text

    winner, loser = (CALLER, RIVAL) if winners == [0] else (RIVAL, CALLER)
    assert (await reply_to(shop, fake_twilio, winner, "YES")).startswith("You're booked")
    assert (await reply_to(shop, fake_twilio, loser, "1")).startswith(f"{fresh[0]} is held for you")
    assert (await reply_to(shop, fake_twilio, loser, "YES")).startswith("You're booked")

    bookings = shop.api("GET", "/bookings").json()
    assert sorted(b["customer_phone"] for b in bookings) == sorted([CALLER, RIVAL])
    overlapping = await db.fetchval(
        "SELECT count(*) FROM sched_bookings a JOIN sched_bookings b ON a.id < b.id "
        "AND a.resource_id = b.resource_id AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at) "
        "WHERE a.status = 'confirmed' AND b.status = 'confirmed'"
    )
    assert overlapping == 0

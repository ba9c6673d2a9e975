"""Booking by SMS on the real app, dispatcher and database with the fake Twilio API: each transition of
the dialog as a caller drives it, refusals (taken, expired), redelivery, opt-out, settings."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from nmc.booking_by_sms.dialog import MAX_REPROMPTS
from tests.integration.test_inbound_sms import events
from tests.integration.test_inbox_support import CALLER, dispatch_all, messages, sent_to, text_in, texted_back

Client = AsyncTestClient[Litestar]
ALL_DAY = {day: [["00:00", "24:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
OTHER_CALLER = "+15557650000"


class Shop:
    def __init__(self, tenant: Any, resource_id: str, job_type_id: str | None) -> None:
        self.tenant = tenant
        self.number = tenant.number
        self.headers = tenant.headers
        self.resource_id = resource_id
        self.job_type_id = job_type_id


async def make_shop(client: Client, make_tenant: Any, *, job_type: bool = True) -> Shop:
    """A shop with one technician who works around the clock and a one-hour job, bookable right away."""
    tenant = await make_tenant()
    response = await client.post(
        "/api/resources", json={"name": "Ana", "weekly_hours": ALL_DAY}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    resource_id = response.json()["id"]
    job_type_id = None
    if job_type:
        body = {"name": "Repair", "duration_minutes": 60, "min_notice_minutes": 0}
        response = await client.post("/api/job-types", json=body, headers=tenant.headers)
        assert response.status_code == 201, response.text
        job_type_id = response.json()["id"]
    return Shop(tenant, resource_id, job_type_id)


async def say(client: Client, db: asyncpg.Connection, shop: Shop, body: str, caller: str = CALLER) -> None:
    await text_in(client, shop.number, body, caller)
    await dispatch_all(db)


def booking_texts(fake_twilio: Any, caller: str = CALLER) -> list[str]:
    return [m["form"]["Body"] for m in sent_to(fake_twilio, caller) if "Hi, this is" not in m["form"]["Body"]]


async def dialog(db: asyncpg.Connection, caller: str = CALLER) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT d.* FROM conv_booking_dialogs d JOIN conv_threads t ON t.id = d.thread_id WHERE t.caller = $1 "
        "ORDER BY d.updated_at DESC LIMIT 1",
        caller,
    )


def offered_starts(row: asyncpg.Record) -> list[datetime]:
    offers = json.loads(row["offers"]) if isinstance(row["offers"], str) else row["offers"]
    return [datetime.fromisoformat(o["start"]) for o in offers]


async def offered(client: Client, db: asyncpg.Connection, shop: Shop, fake_twilio: Any) -> list[datetime]:
    """The caller got a first SMS and asked to book: the three times offered."""
    await texted_back(client, db, shop.tenant)
    await say(client, db, shop, "BOOK")
    row = await dialog(db)
    assert row["state"] == "offered"
    return offered_starts(row)


async def held(client: Client, db: asyncpg.Connection, shop: Shop, fake_twilio: Any, choice: int = 2) -> datetime:
    starts = await offered(client, db, shop, fake_twilio)
    await say(client, db, shop, str(choice))
    assert (await dialog(db))["state"] == "held"
    return starts[choice - 1]


async def run_out(db: asyncpg.Connection) -> None:
    """Every hold's time is up (the GC has not run yet)."""
    await db.execute("UPDATE sched_allocations SET expires_at = now() - interval '1 second' WHERE kind = 'hold'")
    await db.execute("UPDATE sched_holds SET expires_at = now() - interval '1 second'")


# ---------------------------------------------------------------------------- the happy path
async def test_book_then_pick_then_yes_books_the_slot(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    zone = ZoneInfo(await db.fetchval("SELECT timezone FROM tenants WHERE id = $1::uuid", shop.tenant.id))
    starts = await offered(client, db, shop, fake_twilio)

    [offer_text] = booking_texts(fake_twilio)
    assert len(starts) == 3 and starts == sorted(starts)
    assert all(later - earlier >= timedelta(hours=1) for earlier, later in itertools.pairwise(starts))
    assert starts[0] >= datetime.now(UTC) - timedelta(minutes=1)
    assert "Reply 1, 2 or 3" in offer_text and "1) " in offer_text and "3) " in offer_text
    first_local = starts[0].astimezone(zone)
    assert f"{first_local.hour % 12 or 12}:{first_local.minute:02d}" in offer_text

    await say(client, db, shop, "2")
    [hold] = await db.fetch("SELECT * FROM sched_holds")
    assert hold["starts_at"] == starts[1] and hold["customer_phone"] == CALLER
    assert str(hold["resource_id"]) == shop.resource_id and str(hold["job_type_id"]) == shop.job_type_id
    row = await dialog(db)
    assert row["state"] == "held" and row["hold_id"] == hold["id"] and row["hold_start"] == starts[1]
    assert "Reply YES to confirm" in booking_texts(fake_twilio)[-1] and "15 minutes" in booking_texts(fake_twilio)[-1]

    await say(client, db, shop, "Yes!")
    [booking] = await db.fetch("SELECT * FROM sched_bookings")
    assert booking["starts_at"] == starts[1] and booking["source"] == "sms" and booking["status"] == "confirmed"
    assert booking["customer_phone"] == CALLER and booking["hold_id"] == hold["id"]
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0
    row = await dialog(db)
    assert row["state"] == "booked" and row["booking_id"] == booking["id"] and row["hold_id"] is None
    assert booking_texts(fake_twilio)[-1].startswith("You're booked with Joe's Plumbing for")
    assert await db.fetchval("SELECT status FROM conv_threads WHERE caller = $1", CALLER) == "booked"
    assert len(await events(db, "booking.held")) == 1
    [confirmed] = await events(db, "booking.confirmed")
    assert confirmed["source"] == "sms" and confirmed["customer_phone"] == CALLER
    assert await db.fetchval("SELECT count(*) FROM conv_kpi_facts WHERE metric = 'booking'") == 1
    # every reply is a `booking` text in the thread, sent once
    replies = await messages(db, "booking")
    assert len(replies) == 3 and {r["status"] for r in replies} == {"accepted"}
    assert not await db.fetchval("SELECT count(*) FROM conv_opt_out_events")  # YES was not an opt-in
    # the owner sees the whole conversation in the inbox
    thread_id = replies[0]["thread_id"]
    detail = (await client.get(f"/api/threads/{thread_id}", headers=shop.headers)).json()
    assert [m["kind"] for m in detail["messages"]] == ["first_sms"] + ["inbound", "booking"] * 3
    assert detail["status"] == "booked"


# ---------------------------------------------------------------------------- idle
async def test_a_text_that_does_not_ask_to_book_is_left_to_the_owner(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await texted_back(client, db, shop.tenant)
    for body in ("My sink is leaking", "1", "yes", "no"):
        await say(client, db, shop, body)
    assert booking_texts(fake_twilio) == []
    assert await db.fetchval("SELECT count(*) FROM conv_booking_dialogs") == 0  # no lock, no row
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0


async def test_asking_in_words_or_with_the_prompts_keyword_offers_times(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    settings = {"booking_prompt": "Reply VISIT to get a time.", "quiet_hours_start": None, "quiet_hours_end": None}
    response = await client.put("/api/settings/messaging", json=settings, headers=shop.headers)
    assert response.status_code == 200, response.text
    await texted_back(client, db, shop.tenant)
    await say(client, db, shop, "visit")
    assert (await dialog(db))["state"] == "offered"
    await say(client, db, shop, "no thanks")
    assert (await dialog(db))["state"] == "idle"
    await say(client, db, shop, "Can I book an appointment for tomorrow?")
    assert (await dialog(db))["state"] == "offered"
    texts = booking_texts(fake_twilio)
    assert len(texts) == 3 and "Reply 1, 2 or 3" in texts[0] and texts[1].startswith("No problem")


async def test_a_sender_without_a_phone_number_is_never_offered_times(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await say(client, db, shop, "BOOK", caller="22395")  # a short code: bookings need a customer phone
    assert await db.fetchval("SELECT count(*) FROM conv_booking_dialogs") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox_events_errors") == 0
    assert booking_texts(fake_twilio, "22395") == []


async def test_without_a_job_type_the_caller_is_told_the_owner_will_text(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant, job_type=False)
    await texted_back(client, db, shop.tenant)
    await say(client, db, shop, "BOOK")
    assert booking_texts(fake_twilio) == ["Thanks! Joe's Plumbing will text you back shortly to set up a time."]
    assert (await dialog(db))["state"] == "idle"


async def test_no_open_time_says_so(client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any) -> None:
    shop = await make_shop(client, make_tenant)
    response = await client.patch(f"/api/resources/{shop.resource_id}", json={"active": False}, headers=shop.headers)
    assert response.status_code == 200, response.text
    await texted_back(client, db, shop.tenant)
    await say(client, db, shop, "BOOK")
    assert "no open times to offer by text" in booking_texts(fake_twilio)[0]
    assert (await dialog(db))["state"] == "idle"


# ---------------------------------------------------------------------------- offered
async def test_unclear_replies_get_a_reprompt_a_limited_number_of_times(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await offered(client, db, shop, fake_twilio)
    for body in ("what about 3pm?", "YES", "7", "hmm"):
        await say(client, db, shop, body)
    texts = booking_texts(fake_twilio)
    assert len(texts) == 1 + MAX_REPROMPTS  # the offer, then re-prompts until the limit
    assert all(t.startswith("Sorry, I didn't get that. Reply 1, 2 or 3") for t in texts[1:])
    assert (await dialog(db))["state"] == "offered"
    await say(client, db, shop, "3")  # a valid choice still works, and resets the count
    assert (await dialog(db))["state"] == "held" and (await dialog(db))["reprompts"] == 0
    assert not await db.fetchval("SELECT count(*) FROM conv_opt_out_events")


async def test_more_offers_later_times(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    first = await offered(client, db, shop, fake_twilio)
    await say(client, db, shop, "more")
    later = offered_starts(await dialog(db))
    assert len(later) == 3 and later[0] >= first[-1] + timedelta(hours=1)


async def test_a_time_taken_meanwhile_gets_fresh_options(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    starts = await offered(client, db, shop, fake_twilio)
    body = {"resource_id": shop.resource_id, "job_type_id": shop.job_type_id, "start": starts[0].isoformat()}
    response = await client.post("/api/bookings", json=body, headers=shop.headers)  # the owner books it
    assert response.status_code == 201, response.text

    await say(client, db, shop, "1")
    text = booking_texts(fake_twilio)[-1]
    assert text.startswith("Sorry, that time is no longer available.") and "Reply 1, 2 or 3" in text
    row = await dialog(db)
    fresh = offered_starts(row)
    assert row["state"] == "offered" and starts[0] not in fresh and len(fresh) == 3
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0
    assert await db.fetchval("SELECT count(*) FROM sched_bookings") == 1


# ---------------------------------------------------------------------------- held
async def test_no_lets_the_hold_go(client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any) -> None:
    shop = await make_shop(client, make_tenant)
    await held(client, db, shop, fake_twilio)
    await say(client, db, shop, "No")
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0
    assert await db.fetchval("SELECT count(*) FROM sched_allocations") == 0
    assert (await dialog(db))["state"] == "idle"
    assert booking_texts(fake_twilio)[-1].startswith("OK, that time is released")


async def test_another_choice_moves_the_hold(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await held(client, db, shop, fake_twilio, choice=1)
    starts = offered_starts(await dialog(db))
    await say(client, db, shop, "3")
    [hold] = await db.fetch("SELECT * FROM sched_holds")
    assert hold["starts_at"] == starts[2]
    assert await db.fetchval("SELECT count(*) FROM sched_allocations") == 1


async def test_unclear_while_held_asks_for_yes_or_no(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await held(client, db, shop, fake_twilio)
    await say(client, db, shop, "is that in the morning?")
    assert re.match(r"Reply YES to confirm \w{3} \w{3} \d+, \d+:\d\d [AP]M, or NO", booking_texts(fake_twilio)[-1])
    row = await dialog(db)
    assert row["state"] == "held" and row["hold_id"] is not None and row["reprompts"] == 1


async def test_yes_after_the_hold_ran_out_offers_fresh_times(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await held(client, db, shop, fake_twilio)
    await run_out(db)
    await say(client, db, shop, "YES")
    text = booking_texts(fake_twilio)[-1]
    assert re.match(r"Your hold on .+ ran out\. Joe's Plumbing can come: 1\) ", text), text
    assert (await dialog(db))["state"] == "offered"
    assert await db.fetchval("SELECT count(*) FROM sched_bookings") == 0
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0


async def test_the_hold_gc_tells_the_caller_and_offers_fresh_times(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    from nmc.events.dispatcher import dispatch
    from nmc.scheduling import collect_expired_holds

    shop = await make_shop(client, make_tenant)
    await held(client, db, shop, fake_twilio)
    await run_out(db)
    assert await collect_expired_holds() == 1
    await dispatch_all(db)
    expired = await db.fetchval("SELECT id FROM outbox_events WHERE event_name = 'hold.expired'")
    await db.execute("UPDATE outbox_events SET dispatched_at = NULL WHERE id = $1", expired)
    await dispatch(expired)  # redelivered: changes nothing
    await dispatch_all(db)
    texts = booking_texts(fake_twilio)
    assert texts[-1].startswith("Your hold on ") and "Reply 1, 2 or 3" in texts[-1]
    assert len(texts) == 3  # offer, held, expired + fresh offer
    assert (await dialog(db))["state"] == "offered"


async def test_stop_while_held_releases_the_time_and_texts_nothing(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await held(client, db, shop, fake_twilio)
    before = len(booking_texts(fake_twilio))
    await say(client, db, shop, "STOP")
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 0
    assert (await dialog(db))["state"] == "idle"
    assert len(booking_texts(fake_twilio)) == before


# ---------------------------------------------------------------------------- exactly once
async def test_a_redelivered_message_event_changes_nothing(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    from nmc.events.dispatcher import dispatch

    shop = await make_shop(client, make_tenant)
    await held(client, db, shop, fake_twilio)
    event_id = await db.fetchval(
        "SELECT id FROM outbox_events WHERE event_name = 'message.received' ORDER BY created_at DESC LIMIT 1"
    )
    await db.execute("UPDATE outbox_events SET dispatched_at = NULL WHERE id = $1", event_id)
    await dispatch(event_id)
    await dispatch_all(db)
    assert await db.fetchval("SELECT count(*) FROM sched_holds") == 1
    assert len(await messages(db, "booking")) == 2


async def test_two_callers_racing_for_one_time_one_holds_it(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    starts = await offered(client, db, shop, fake_twilio)
    await texted_back(client, db, shop.tenant, OTHER_CALLER)
    await say(client, db, shop, "BOOK", OTHER_CALLER)
    assert offered_starts(await dialog(db, OTHER_CALLER))[0] == starts[0]
    await text_in(client, shop.number, "1", CALLER)
    await text_in(client, shop.number, "1", OTHER_CALLER)
    await dispatch_all(db)
    [hold] = await db.fetch("SELECT * FROM sched_holds")
    assert hold["starts_at"] == starts[0] and hold["customer_phone"] == CALLER
    assert booking_texts(fake_twilio, OTHER_CALLER)[-1].startswith("Sorry, that time is no longer available.")
    assert starts[0] not in offered_starts(await dialog(db, OTHER_CALLER))


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize("which", ["unknown", "inactive"])
async def test_the_booking_job_type_must_be_an_active_one_of_the_tenant(
    client: Client, make_tenant: Any, which: str
) -> None:
    shop = await make_shop(client, make_tenant)
    job_type_id = str(UUID(int=7))
    if which == "inactive":
        job_type_id = str(shop.job_type_id)
        await client.patch(f"/api/job-types/{job_type_id}", json={"active": False}, headers=shop.headers)
    response = await client.put(
        "/api/settings/messaging", json={"booking_job_type_id": job_type_id}, headers=shop.headers
    )
    assert response.status_code == 422 and response.json()["field"] == "booking_job_type_id"


async def test_the_chosen_job_type_is_the_one_booked(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    body = {"name": "Estimate", "duration_minutes": 30, "min_notice_minutes": 0}
    estimate = (await client.post("/api/job-types", json=body, headers=shop.headers)).json()["id"]
    settings = {"booking_job_type_id": estimate, "quiet_hours_start": None, "quiet_hours_end": None}
    response = await client.put("/api/settings/messaging", json=settings, headers=shop.headers)
    assert response.status_code == 200 and response.json()["booking_job_type_id"] == estimate
    await held(client, db, shop, fake_twilio)
    assert str(await db.fetchval("SELECT job_type_id FROM sched_holds")) == estimate


async def test_a_job_type_deactivated_mid_dialog_is_not_offered_again(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await offered(client, db, shop, fake_twilio)
    response = await client.patch(f"/api/job-types/{shop.job_type_id}", json={"active": False}, headers=shop.headers)
    assert response.status_code == 200, response.text
    await say(client, db, shop, "more")
    assert booking_texts(fake_twilio)[-1] == "Thanks! Joe's Plumbing will text you back shortly to set up a time."
    assert (await dialog(db))["state"] == "idle"


async def test_stop_without_a_dialog_creates_none(
    client: Client, db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    shop = await make_shop(client, make_tenant)
    await texted_back(client, db, shop.tenant)
    await say(client, db, shop, "STOP")
    assert await db.fetchval("SELECT count(*) FROM conv_booking_dialogs") == 0

"""The conversation with the real web and worker processes and the fake Twilio API: missed call →
first SMS → the caller answers → the owner is alerted → the owner answers over REST → the caller gets
it; STOP cancels a scheduled follow-up; a duplicated inbound webhook makes one message."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import httpx
import pytest

from nmc.identity import TenantCreate, create_tenant
from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.conftest import TWILIO_TOKEN
from tests.e2e.conftest import wait_for
from tests.fakes.clerk import FakeClerk
from tests.integration.test_inbox_support import inbound_params, new_message_sid
from tests.processes import Stack

pytestmark = pytest.mark.e2e
CALLER = "+15557651111"
OTHER_CALLER = "+15557652222"
_numbers = itertools.count(1)
NO_QUIET_HOURS = {"quiet_hours_start": None, "quiet_hours_end": None}


class Shop:
    """A tenant as its owner sees it: numbers, and a Clerk session for the REST API."""

    def __init__(self, stack: Stack, number: str, forward_to: str, token: str) -> None:
        self.stack = stack
        self.number = number
        self.forward_to = forward_to
        self.headers = {"Authorization": f"Bearer {token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.stack.base_url}/api{path}", headers=self.headers, timeout=5, **kwargs)

    def twilio(self, path: str, params: dict[str, str]) -> httpx.Response:
        url = f"{self.stack.base_url}{path}"
        return httpx.post(url, data=params, headers=signed_headers(url, params, TWILIO_TOKEN), timeout=5)

    def missed_call(self, caller: str) -> httpx.Response:
        return self.twilio(
            "/webhooks/twilio/voice/dial-status", dial_outcome_params(new_call_sid(), caller, self.number)
        )

    def text_in(self, caller: str, body: str, sid: str | None = None) -> httpx.Response:
        response = self.twilio("/webhooks/twilio/sms", inbound_params(self.number, body, caller, sid=sid))
        assert response.status_code == 200 and "<Response />" in response.text
        return response


async def make_shop(stack: Stack, clerk: FakeClerk, **settings: Any) -> Shop:
    n = next(_numbers)
    number, forward_to, org = f"+1555400{n:04d}", f"+1555499{n:04d}", f"org_e2e_conv_{n}"
    await create_tenant(
        TenantCreate(
            name=f"Shop {n}", twilio_number=number, forwarding_number=forward_to, timezone="Etc/GMT", clerk_org_id=org
        )
    )
    shop = Shop(stack, number, forward_to, clerk.mint(org_id=org, exp_in=3600))
    response = shop.api("PUT", "/settings/messaging", json={**NO_QUIET_HOURS, **settings})  # any hour of the day
    assert response.status_code == 200, response.text
    return shop


def texts_to(fake_twilio: Any, number: str) -> list[dict[str, Any]]:
    return [m for m in fake_twilio.messages() if m["sid"] and m["form"]["To"] == number]


async def wait_for_texts(fake_twilio: Any, number: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = texts_to(fake_twilio, number)
        return found if len(found) >= count else None

    return list(await wait_for(enough, timeout))


async def test_missed_call_to_owner_reply(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, clerk: FakeClerk
) -> None:
    shop = await make_shop(stack, clerk)
    assert shop.missed_call(CALLER).status_code == 200
    [first] = await wait_for_texts(fake_twilio, CALLER, 1)
    assert first["form"]["From"] == shop.number and "Reply STOP" in first["form"]["Body"]

    shop.text_in(CALLER, "Yes! Water heater is leaking, can you come today?")
    [alert] = await wait_for_texts(fake_twilio, shop.forward_to, 1)
    assert CALLER in alert["form"]["Body"] and "Water heater is leaking" in alert["form"]["Body"]

    page = shop.api("GET", "/threads", params={"unread": "true"}).json()
    [thread] = page["items"]
    assert thread["caller"] == CALLER and thread["unread_count"] == 1 and page["next_cursor"] is None
    answer = shop.api("POST", f"/threads/{thread['id']}/messages", json={"body": "Yes, we'll be there at 2pm."})
    assert answer.status_code == 202 and answer.json()["status"] == "pending"
    texts = await wait_for_texts(fake_twilio, CALLER, 2)
    assert texts[1]["form"]["Body"] == "Yes, we'll be there at 2pm." and texts[1]["form"]["From"] == shop.number

    async def reply_accepted() -> bool:
        detail = shop.api("GET", f"/threads/{thread['id']}").json()
        return [m["status"] for m in detail["messages"]][-1] == "accepted"

    await wait_for(reply_accepted)
    detail = shop.api("GET", f"/threads/{thread['id']}").json()
    assert [m["kind"] for m in detail["messages"]] == ["first_sms", "inbound", "reply"]
    assert detail["unread_count"] == 0  # answering reads the thread
    await asyncio.sleep(0.5)
    assert len(texts_to(fake_twilio, CALLER)) == 2 and len(texts_to(fake_twilio, shop.forward_to)) == 1


async def test_stop_cancels_the_scheduled_follow_up(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, clerk: FakeClerk
) -> None:
    shop = await make_shop(
        stack, clerk, follow_up_delay_minutes=30, follow_up_template="Still need us? STOP to opt out"
    )
    for caller in (CALLER, OTHER_CALLER):
        shop.missed_call(caller)
        await wait_for_texts(fake_twilio, caller, 1)

    async def follow_ups_scheduled() -> bool:
        return await db.fetchval("SELECT count(*) FROM conv_threads WHERE follow_up_due_at IS NOT NULL") == 2

    await wait_for(follow_ups_scheduled)
    shop.text_in(CALLER, "STOP")  # mid-conversation
    assert await db.fetchval("SELECT status FROM conv_threads WHERE caller = $1", CALLER) == "opted_out"
    # Time passes: both follow-ups fall due; the worker's sweep sends only the one still wanted.
    await db.execute("UPDATE conv_threads SET follow_up_due_at = now() - interval '1 second'")
    [_, follow_up] = await wait_for_texts(fake_twilio, OTHER_CALLER, 2, timeout=15)
    assert follow_up["form"]["Body"] == "Still need us? STOP to opt out"
    await asyncio.sleep(1.0)
    assert len(texts_to(fake_twilio, CALLER)) == 1
    assert await db.fetchval("SELECT count(*) FROM conv_messages WHERE kind = 'follow_up'") == 1


async def test_a_duplicate_inbound_webhook_makes_one_message(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any, clerk: FakeClerk
) -> None:
    shop = await make_shop(stack, clerk)
    sid = new_message_sid()
    first = shop.text_in(CALLER, "Do you do weekends?", sid=sid)
    again = shop.text_in(CALLER, "Do you do weekends?", sid=sid)
    assert first.text == again.text
    await wait_for_texts(fake_twilio, shop.forward_to, 1)
    await asyncio.sleep(1.0)
    assert await db.fetchval("SELECT count(*) FROM conv_messages WHERE kind = 'inbound'") == 1
    assert len(texts_to(fake_twilio, shop.forward_to)) == 1
    [thread] = shop.api("GET", "/threads").json()["items"]
    assert thread["unread_count"] == 1 and thread["last_message_preview"] == "Do you do weekends?"

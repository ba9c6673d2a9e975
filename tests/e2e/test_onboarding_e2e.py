"""Self-serve onboarding (issue #15) with the real web and worker processes, the fake Clerk (Svix-signed
webhooks, session tokens) and the fake Twilio API (numbers, Messaging Service, Calls, Messages):

- sign-up to the first texted-back missed call through the API alone: organisation created → tenant →
  number bought → forwarding verified by the texted code → a missed call to the new number is texted;
- the organisation deleted → its number released at Twilio, nothing more texted;
- Clerk events twice and out of order end in the right state; bad Svix signatures are refused and counted;
- a number Twilio sold us whose answer was lost is found by the reconcile, not bought twice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.conftest import TWILIO_TOKEN
from tests.e2e.conftest import stack_env, wait_for
from tests.fakes.clerk import (
    ClerkWebhooks,
    FakeClerk,
    clerk_event,
    clerk_millis,
    deleted_organization_data,
    membership_data,
    organization_data,
)
from tests.processes import Stack

pytestmark = pytest.mark.e2e
TEST_LINE = "+15005550006"  # our own Twilio number that places onboarding's test calls
OWNER_CELL = "+15125550100"
CALLER = "+15125550777"
CODE = re.compile(r"your code is (\d{6})")
HOOKS = ClerkWebhooks()


@pytest.fixture(scope="module")
def stack(migrated_database: str, fake_twilio_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = stack_env(
        fake_twilio_server.base_url,
        TWILIO_MESSAGING_API_BASE_URL=fake_twilio_server.base_url,
        TWILIO_TEST_CALL_FROM=TEST_LINE,
        CLERK_WEBHOOK_SECRET=HOOKS.secret,
    )
    running = Stack(env, tmp_path_factory.mktemp("e2e-onboarding-logs"))
    yield running
    running.stop()


@pytest.fixture
def twilio(fake_twilio: Any) -> Any:
    fake_twilio.add_existing_number(TEST_LINE, "our test line")
    return fake_twilio


class Owner:
    """The business owner's browser: a Clerk session for the organisation, talking to /api."""

    def __init__(self, stack: Stack, clerk: FakeClerk, org_id: str) -> None:
        self.base = stack.base_url
        self.headers = {"Authorization": f"Bearer {clerk.mint(sub='user_owner', org_id=org_id, exp_in=3600)}"}

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers=self.headers, timeout=10)

    def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", json=body, headers={**self.headers, **headers}, timeout=20)

    def put(self, path: str, body: Any) -> httpx.Response:
        return httpx.put(f"{self.base}{path}", json=body, headers=self.headers, timeout=10)

    def patch(self, path: str, body: Any) -> httpx.Response:
        return httpx.patch(f"{self.base}{path}", json=body, headers=self.headers, timeout=10)


def clerk_sends(stack: Stack, event: dict[str, Any], **options: Any) -> httpx.Response:
    return HOOKS.deliver(f"{stack.base_url}/webhooks/clerk", event, **options)


def sign_up(stack: Stack, org_id: str, name: str) -> None:
    """Clerk tells us the organisation exists and who owns it."""
    org = organization_data(org_id, name)
    assert clerk_sends(stack, clerk_event("organization.created", org)).status_code == 200
    member = membership_data(f"orgmem_{org_id}", org, "user_owner", role="org:admin")
    assert clerk_sends(stack, clerk_event("organizationMembership.created", member)).status_code == 200


def twilio_posts(stack: Stack, path: str, params: dict[str, str]) -> httpx.Response:
    url = f"{stack.base_url}{path}"
    return httpx.post(url, data=params, headers=signed_headers(url, params, TWILIO_TOKEN), timeout=5)


def call_comes_in(stack: Stack, to: str, caller: str = CALLER) -> tuple[str, httpx.Response]:
    call_sid = new_call_sid()
    incoming = {"CallSid": call_sid, "From": caller, "To": to, "CallStatus": "ringing", "Direction": "inbound"}
    return call_sid, twilio_posts(stack, "/webhooks/twilio/voice", incoming)


def nobody_answers(stack: Stack, to: str, call_sid: str, caller: str = CALLER) -> httpx.Response:
    return twilio_posts(stack, "/webhooks/twilio/voice/dial-status", dial_outcome_params(call_sid, caller, to))


def texts_to(twilio: Any, number: str) -> list[dict[str, Any]]:
    return [r for r in twilio.messages() if r["form"].get("To") == number and r["sid"]]


async def wait_for_texts(twilio: Any, number: str, count: int = 1, timeout: float = 15) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        found = texts_to(twilio, number)
        return found if len(found) >= count else None

    result: list[dict[str, Any]] = await wait_for(enough, timeout)
    return result


def metric(stack: Stack, line_start: str) -> float:
    for line in httpx.get(f"{stack.base_url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_sign_up_to_the_first_texted_back_missed_call_through_the_api(
    stack: Stack, db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    sign_up(stack, "org_joes", "Joe's Plumbing")
    owner = Owner(stack, clerk, "org_joes")
    onboarding = owner.get("/api/onboarding").json()
    assert (onboarding["status"], onboarding["required_open"]) == ("onboarding", ["number"])

    # Hours, zone and texts (quiet hours off: this test runs at any hour).
    assert owner.patch("/api/tenant", {"timezone": "America/Chicago"}).status_code == 200
    settings = {"quiet_hours_start": None, "quiet_hours_end": None}
    assert owner.put("/api/settings/messaging", settings).status_code == 200

    available = owner.get("/api/numbers/available?area_code=512").json()
    chosen = available[0]["phone_number"]
    bought = owner.post(
        "/api/numbers", {"phone_number": chosen, "forward_to": OWNER_CELL}, **{"Idempotency-Key": "k-1"}
    )
    assert bought.status_code == 201, bought.text
    number = bought.json()
    assert owner.get("/api/onboarding").json()["status"] == "active"

    # The worker texts the code from the new number; the owner types it in.
    [code_text] = await wait_for_texts(twilio, OWNER_CELL)
    assert code_text["form"]["From"] == chosen
    found = CODE.search(code_text["form"]["Body"])
    assert found
    verified = owner.post(f"/api/numbers/{number['id']}/verify-forwarding", {"code": found.group(1)})
    assert verified.status_code == 200, verified.text
    steps = {s["key"]: s["done"] for s in owner.get("/api/onboarding").json()["steps"]}
    assert steps | {"calendar_connected": True, "test_call": True} == dict.fromkeys(steps, True)

    # A caller: the call rings the verified forwarding number, nobody answers, the caller is texted back.
    call_sid, answer = call_comes_in(stack, chosen)
    assert f"<Number>{OWNER_CELL}</Number>" in answer.text
    assert "<Say>" in nobody_answers(stack, chosen, call_sid).text
    [first_sms] = await wait_for_texts(twilio, CALLER)
    assert first_sms["form"]["From"] == chosen and "Joe's Plumbing" in first_sms["form"]["Body"]

    # The test call: Twilio's Calls API rings the number from our test line.
    placed = owner.post("/api/onboarding/test-call")
    assert placed.status_code == 201, placed.text
    assert [(c["to"], c["from"]) for c in twilio.calls()] == [(chosen, TEST_LINE)]
    test_sid, _ = call_comes_in(stack, chosen, TEST_LINE)
    nobody_answers(stack, chosen, test_sid, TEST_LINE)
    await wait_for_texts(twilio, TEST_LINE)
    steps = {s["key"]: s["done"] for s in owner.get("/api/onboarding").json()["steps"]}
    assert steps["test_call"] and not steps["calendar_connected"]


async def test_a_deleted_organization_releases_its_number_and_texts_nothing_more(
    stack: Stack, db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    sign_up(stack, "org_closing", "Closing Co")
    owner = Owner(stack, clerk, "org_closing")
    owner.put("/api/settings/messaging", {"quiet_hours_start": None, "quiet_hours_end": None})
    chosen = owner.get("/api/numbers/available?area_code=617").json()[0]["phone_number"]
    assert owner.post("/api/numbers", {"phone_number": chosen, "forward_to": OWNER_CELL}).status_code == 201
    await wait_for_texts(twilio, OWNER_CELL)
    call_comes_in(stack, chosen)  # unverified forwarding: missed at once, texted back
    await wait_for_texts(twilio, CALLER)

    assert (
        clerk_sends(stack, clerk_event("organization.deleted", deleted_organization_data("org_closing"))).status_code
        == 200
    )

    async def released() -> bool:
        return [n["phone_number"] for n in twilio.numbers_state()["released"]] == [chosen]

    await wait_for(released)
    assert await db.fetchval("SELECT status FROM tenants WHERE clerk_org_id = 'org_closing'") == "deactivated"
    # Twilio would not call us for a released number; if a late webhook came, nobody is texted.
    _, answer = call_comes_in(stack, chosen, "+15125550888")
    assert "not in service" in answer.text
    await asyncio.sleep(1.5)
    assert texts_to(twilio, "+15125550888") == []
    assert len(texts_to(twilio, CALLER)) == 1
    assert owner.get("/api/onboarding").status_code == 403
    assert await db.fetchval("SELECT count(*) FROM conv_calls") == 1  # kept; the late call was routed nowhere


async def test_clerk_events_twice_and_out_of_order_end_right(
    stack: Stack, db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    t0 = clerk_millis() - 60_000
    created = organization_data("org_ooo", "First Name", created_at=t0)
    renamed = organization_data("org_ooo", "Final Name", created_at=t0, updated_at=t0 + 5_000)
    dedupe_before = metric(stack, 'webhook_dedupe_hits_total{provider="clerk"}')
    first = clerk_sends(stack, clerk_event("organization.updated", renamed), msg_id="msg_renamed")
    assert first.status_code == 200
    assert HOOKS.redeliver(f"{stack.base_url}/webhooks/clerk", "msg_renamed").status_code == 200
    assert clerk_sends(stack, clerk_event("organization.created", created)).status_code == 200
    member = membership_data("orgmem_ooo", renamed, "user_tech", role="org:member", updated_at=t0 + 9_000)
    removal = clerk_event("organizationMembership.deleted", member, timestamp=t0 + 20_000)
    assert clerk_sends(stack, removal).status_code == 200
    assert clerk_sends(stack, clerk_event("organizationMembership.created", member)).status_code == 200

    tenant = await db.fetchrow("SELECT name, status FROM tenants WHERE clerk_org_id = 'org_ooo'")
    assert (tenant["name"], tenant["status"]) == ("Final Name", "onboarding")
    assert await db.fetchval("SELECT count(*) FROM tenants") == 1
    assert await db.fetchval("SELECT removed_at IS NOT NULL FROM users WHERE clerk_user_id = 'user_tech'")
    assert await db.fetchval("SELECT count(*) FROM webhook_events WHERE provider = 'clerk'") == 4
    assert metric(stack, 'webhook_dedupe_hits_total{provider="clerk"}') == dedupe_before + 1


async def test_bad_svix_signatures_are_refused_and_counted(stack: Stack, db: asyncpg.Connection, twilio: Any) -> None:
    before = metric(stack, 'webhook_signature_failures_total{provider="clerk"}')
    event = clerk_event("organization.created", organization_data("org_forged", "Forged"))
    assert clerk_sends(stack, event, tamper=True).status_code == 400
    assert clerk_sends(stack, event, secret="whsec_" + "Zm9yZ2Vk" * 4).status_code == 400
    unsigned = httpx.post(f"{stack.base_url}/webhooks/clerk", json=event, timeout=5)
    assert unsigned.status_code == 400
    assert metric(stack, 'webhook_signature_failures_total{provider="clerk"}') == before + 3
    assert await db.fetchval("SELECT count(*) FROM tenants") == 0
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_a_number_sold_but_not_recorded_is_found_not_bought_twice(
    stack: Stack, db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    sign_up(stack, "org_retry", "Retry Roofing")
    owner = Owner(stack, clerk, "org_retry")
    chosen = owner.get("/api/numbers/available?area_code=415").json()[0]["phone_number"]
    twilio.script_numbers([{"status": 500, "drop_after_create": True}])  # Twilio sells it; its answer is lost
    lost = owner.post("/api/numbers", {"phone_number": chosen, "forward_to": OWNER_CELL}, **{"Idempotency-Key": "a"})
    assert lost.status_code == 502
    assert await db.fetchval("SELECT count(*) FROM tenant_phone_numbers") == 0
    again = owner.post("/api/numbers", {"phone_number": chosen, "forward_to": OWNER_CELL}, **{"Idempotency-Key": "b"})
    assert again.status_code == 201, again.text
    buys = [
        r for r in twilio.numbers_state()["requests"] if r["method"] == "POST" and "IncomingPhoneNumbers" in r["path"]
    ]
    assert len(buys) == 1
    assert [n["phone_number"] for n in owner.get("/api/numbers").json()] == [chosen]
    assert owner.get("/api/onboarding").json()["status"] == "active"

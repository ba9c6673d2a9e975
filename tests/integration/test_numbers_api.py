"""Self-serve numbers and onboarding (issue #15), in-process against the fake Twilio: search, buy (once,
whatever fails), forwarding verified by a texted code, import, release, a deactivated tenant's numbers,
the checklist, the test call and `nmc numbers sync-webhooks`."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import TEST_ENVIRONMENT, run_cli
from tests.fakes.clerk import ClerkWebhooks, FakeClerk, clerk_event, deleted_organization_data
from tests.integration.test_inbox_support import dispatch_all
from tests.integration.twilio_webhooks import missed_call, post_twilio

PUBLIC = TEST_ENVIRONMENT["PUBLIC_BASE_URL"]
SERVICE = TEST_ENVIRONMENT["TWILIO_MESSAGING_SERVICE_SID"]
TEST_LINE = "+15005550006"
OWNER_CELL = "+15125550100"
CALLER = "+15125550777"
CODE = re.compile(r"your code is (\d{6})")


@pytest.fixture
def twilio(fake_twilio: Any, settings_env: Any) -> Any:
    settings_env(
        TWILIO_MESSAGING_API_BASE_URL=fake_twilio.base_url,
        TWILIO_TEST_CALL_FROM=TEST_LINE,
        CLERK_WEBHOOK_SECRET=ClerkWebhooks().secret,
    )
    fake_twilio.add_existing_number(TEST_LINE, "our test line")
    return fake_twilio


def owner(clerk: FakeClerk, org_id: str = "org_shop", role: str = "org:admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {clerk.mint(sub=f'user_{role[4:]}', org_id=org_id, role=role, exp_in=3600)}"}


async def buy(client: AsyncTestClient[Any], headers: dict[str, str], number: str, **extra: str) -> Any:
    return await client.post(
        "/api/numbers", json={"phone_number": number, "forward_to": OWNER_CELL}, headers={**headers, **extra}
    )


async def code_texted(db: asyncpg.Connection, to: str = OWNER_CELL) -> str:
    body = await db.fetchval(
        "SELECT body FROM conv_messages WHERE kind = 'forwarding_code' AND to_number = $1 ORDER BY created_at DESC",
        to,
    )
    found = CODE.search(body or "")
    assert found, body
    return found.group(1)


def purchases(twilio: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in twilio.numbers_state()["requests"]
        if r["method"] == "POST" and r["path"].endswith("/IncomingPhoneNumbers.json")
    ]


async def test_search_offers_local_numbers_that_take_calls_and_texts(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    found = (await client.get("/api/numbers/available?area_code=415", headers=headers)).json()
    assert {n["phone_number"] for n in found} == {f"+1415555{n:04d}" for n in range(1, 6)}  # not the voice-only one
    contains = (await client.get("/api/numbers/available?contains=5550003", headers=headers)).json()
    assert [n["phone_number"][-4:] for n in contains] == ["0003", "0003", "0003"]
    near = (await client.get("/api/numbers/available?near=%2B16175551234", headers=headers)).json()
    assert {n["region"] for n in near} == {"MA"}
    assert (await client.get("/api/numbers/available?area_code=41", headers=headers)).status_code == 422
    search = next(r for r in twilio.numbers_state()["requests"] if "AvailablePhoneNumbers" in r["path"])
    assert search["query"]["SmsEnabled"] == search["query"]["VoiceEnabled"] == "true"


async def test_a_bought_number_is_wired_to_us_and_the_tenant_goes_live(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    before = (await client.get("/api/onboarding", headers=headers)).json()
    assert (before["status"], before["live"], before["required_open"]) == ("onboarding", False, ["number"])

    response = await buy(client, headers, "+15125550001")
    assert response.status_code == 201, response.text
    number = response.json()
    assert number["forwarding"]["verified"] is False and number["forwarding"]["code_pending"] is True
    tenant_id = await db.fetchval("SELECT id FROM tenants WHERE clerk_org_id = 'org_shop'")
    incoming = twilio.incoming_numbers()
    bought = next(n for n in incoming if n["phone_number"] == "+15125550001")
    assert bought["friendly_name"] == f"nmc:{tenant_id}"
    assert bought["voice_url"] == f"{PUBLIC}/webhooks/twilio/voice"
    assert bought["status_callback"] == f"{PUBLIC}/webhooks/twilio/voice/status"
    assert bought["sms_url"] == f"{PUBLIC}/webhooks/twilio/sms"
    assert [n["sid"] for n in twilio.numbers_state()["service_numbers"][SERVICE]] == [bought["sid"]]

    after = (await client.get("/api/onboarding", headers=headers)).json()
    assert (after["status"], after["live"], after["required_open"]) == ("active", True, [])
    steps = {step["key"]: step for step in after["steps"]}
    assert steps["number"]["done"] and not steps["forwarding_verified"]["done"]

    # The code goes out through the outbox, from the new number, while nothing has rung yet.
    await dispatch_all(db)
    sent = [r for r in twilio.messages() if r["form"]["To"] == OWNER_CELL]
    assert len(sent) == 1 and sent[0]["sid"]
    assert sent[0]["form"]["From"] == "+15125550001"
    assert CODE.search(sent[0]["form"]["Body"])


async def test_an_unverified_forwarding_number_never_rings_but_the_caller_is_texted(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    number = (await buy(client, headers, "+15125550002")).json()
    quiet_hours_off = {"quiet_hours_start": None, "quiet_hours_end": None}  # this test runs at any hour
    assert (await client.put("/api/settings/messaging", json=quiet_hours_off, headers=headers)).status_code == 200
    call = {"CallSid": "CA" + "1" * 32, "From": CALLER, "To": "+15125550002", "CallStatus": "ringing"}
    answer = await post_twilio(client, "/webhooks/twilio/voice", call)
    assert "<Dial" not in answer.text and "texting you" in answer.text
    assert await db.fetchval("SELECT status FROM conv_calls WHERE call_sid = $1", call["CallSid"]) == "missed"
    await dispatch_all(db)
    first = await db.fetchrow("SELECT status, from_number FROM conv_messages WHERE kind = 'first_sms'")
    assert (first["status"], first["from_number"]) == ("accepted", "+15125550002")

    # Verified: calls ring the forwarding number.
    code = await code_texted(db)
    verified = await client.post(f"/api/numbers/{number['id']}/verify-forwarding", json={"code": code}, headers=headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["forwarding"]["verified"] is True
    call["CallSid"] = "CA" + "2" * 32
    answer = await post_twilio(client, "/webhooks/twilio/voice", call)
    assert f"<Number>{OWNER_CELL}</Number>" in answer.text
    steps = {s["key"]: s["done"] for s in (await client.get("/api/onboarding", headers=headers)).json()["steps"]}
    assert steps["forwarding_verified"]


async def test_codes_have_limited_attempts_expire_and_are_resent_not_too_often(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    number = (await buy(client, headers, "+15125550003")).json()
    url = f"/api/numbers/{number['id']}/verify-forwarding"
    code = await code_texted(db)
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1, 0):
        refused = await client.post(url, json={"code": wrong}, headers=headers)
        assert refused.status_code == 422
        assert (refused.json()["reason"], refused.json()["attempts_left"]) == ("wrong_code", left)
    # The right code is too late now: the attempts were spent (and committed despite the 422s).
    late = await client.post(url, json={"code": code}, headers=headers)
    assert late.json()["reason"] == "too_many_attempts"
    resend = f"/api/numbers/{number['id']}/forwarding-code"
    assert (await client.post(resend, headers=headers)).status_code == 429  # within 30 s
    await db.execute("UPDATE tenant_phone_numbers SET forwarding_code_sent_at = now() - interval '1 minute'")
    assert (await client.post(resend, headers=headers)).status_code == 202
    await db.execute("UPDATE tenant_phone_numbers SET forwarding_code_expires_at = now() - interval '1 second'")
    expired = await client.post(url, json={"code": await code_texted(db)}, headers=headers)
    assert expired.json()["reason"] == "expired"
    assert (await client.post(url, json={"code": "12345"}, headers=headers)).status_code == 422  # not six digits


async def test_an_idempotency_key_answers_the_first_purchase(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    first = await buy(client, headers, "+15125550004", **{"Idempotency-Key": "buy-1"})
    again = await buy(client, headers, "+15125550004", **{"Idempotency-Key": "buy-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(purchases(twilio)) == 1
    # Without a key, asking for a number the tenant has already is answered with it, not bought again.
    third = await buy(client, headers, "+15125550004")
    assert (third.status_code, third.json()["id"]) == (200, first.json()["id"])
    assert len(purchases(twilio)) == 1


async def test_a_purchase_whose_answer_was_lost_is_found_by_the_reconcile(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    twilio.script_numbers([{"status": 500, "drop_after_create": True}])
    lost = await buy(client, headers, "+15125550005", **{"Idempotency-Key": "k1"})
    assert lost.status_code == 502, lost.text
    assert await db.fetchval("SELECT count(*) FROM tenant_phone_numbers") == 0
    assert [n["phone_number"] for n in twilio.incoming_numbers()] == [TEST_LINE, "+15125550005"]
    retried = await buy(client, headers, "+15125550005", **{"Idempotency-Key": "k2"})
    assert retried.status_code == 201, retried.text
    assert len(purchases(twilio)) == 1  # found, not bought twice
    assert await db.fetchval("SELECT count(*) FROM tenant_phone_numbers") == 1
    repeat = await buy(client, headers, "+15125550005", **{"Idempotency-Key": "k2"})
    assert (repeat.status_code, repeat.json()["id"]) == (200, retried.json()["id"])


async def test_a_purchase_whose_commit_failed_is_found_by_the_reconcile(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any, monkeypatch: Any
) -> None:
    from nmc.telephony import numbers

    headers = owner(clerk)
    real_add = numbers.add_number

    async def fail_once(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(numbers, "add_number", real_add)
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection lost before our commit")

    monkeypatch.setattr(numbers, "add_number", fail_once)
    failed = await buy(client, headers, "+16175550001")
    assert failed.status_code == 503  # the database went away after Twilio sold us the number
    assert await db.fetchval("SELECT count(*) FROM tenant_phone_numbers") == 0
    # Another attempt, even for another number, stores the one Twilio sold us first.
    second = await buy(client, headers, "+16175550002")
    assert second.status_code == 201
    stored = await db.fetch("SELECT twilio_number, source FROM tenant_phone_numbers ORDER BY twilio_number")
    assert [(r["twilio_number"], r["source"]) for r in stored] == [
        ("+16175550001", "purchased"),
        ("+16175550002", "purchased"),
    ]
    assert [r["form"]["PhoneNumber"] for r in purchases(twilio)] == ["+16175550001", "+16175550002"]


async def test_a_number_sold_meanwhile_is_409_and_members_may_not_buy(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    sold = await buy(client, owner(clerk), "+19995550000")
    assert sold.status_code == 409
    member = await buy(client, owner(clerk, role="org:member"), "+15125550001")
    assert member.status_code == 403
    other = await buy(client, owner(clerk, "org_other"), "+15125550001")
    assert other.status_code == 201
    assert (await buy(client, owner(clerk), "+15125550001")).status_code == 409  # another tenant's


async def test_change_forwarding_and_release(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    number = (await buy(client, headers, "+14155550001")).json()
    code = await code_texted(db)
    await client.post(f"/api/numbers/{number['id']}/verify-forwarding", json={"code": code}, headers=headers)
    changed = await client.patch(f"/api/numbers/{number['id']}", json={"forward_to": "+14155550100"}, headers=headers)
    assert changed.status_code == 200
    assert (changed.json()["forward_to"], changed.json()["forwarding"]["verified"]) == ("+14155550100", False)
    assert await code_texted(db, "+14155550100")

    released = await client.delete(f"/api/numbers/{number['id']}", headers=headers)
    assert released.status_code == 204
    assert [n["phone_number"] for n in twilio.numbers_state()["released"]] == ["+14155550001"]
    assert (await client.get("/api/numbers", headers=headers)).json() == []
    assert (await client.get(f"/api/numbers/{number['id']}", headers=headers)).status_code == 404
    call = {"CallSid": "CA" + "3" * 32, "From": CALLER, "To": "+14155550001", "CallStatus": "ringing"}
    assert "not in service" in (await post_twilio(client, "/webhooks/twilio/voice", call)).text


async def test_import_a_number_already_in_the_account(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    twilio.add_existing_number("+13035550123", "legacy line", VoiceUrl="https://old.example/voice")
    body = {"phone_number": "+13035550123", "forward_to": OWNER_CELL}
    imported = await client.post("/api/numbers/import", json=body, headers=owner(clerk))
    assert imported.status_code == 201, imported.text
    assert imported.json()["source"] == "imported"
    resource = next(n for n in twilio.incoming_numbers() if n["phone_number"] == "+13035550123")
    assert resource["voice_url"] == f"{PUBLIC}/webhooks/twilio/voice"
    assert resource["friendly_name"].startswith("nmc:")
    assert (await client.post("/api/numbers/import", json=body, headers=owner(clerk, "org_thief"))).status_code == 409
    unknown = {"phone_number": "+13035550999", "forward_to": OWNER_CELL}
    assert (await client.post("/api/numbers/import", json=unknown, headers=owner(clerk))).status_code == 404
    assert purchases(twilio) == []


async def test_a_deleted_organization_releases_its_numbers_and_texts_no_more(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    await buy(client, headers, "+16175550003")
    await buy(client, headers, "+16175550004")
    await dispatch_all(db)
    body, signed = ClerkWebhooks().signed(clerk_event("organization.deleted", deleted_organization_data("org_shop")))
    assert (await client.post("/webhooks/clerk", content=body, headers=signed)).status_code == 200
    # Texting is off at once: a call before the release is recorded, nobody is texted.
    await missed_call(client, "+16175550003", CALLER)
    await dispatch_all(db)
    assert sorted(n["phone_number"] for n in twilio.numbers_state()["released"]) == ["+16175550003", "+16175550004"]
    assert await db.fetchval("SELECT count(*) FROM tenant_phone_numbers WHERE released_at IS NULL") == 0
    first = await db.fetchrow("SELECT status, suppressed_reason FROM conv_messages WHERE kind = 'first_sms'")
    assert (first["status"], first["suppressed_reason"]) == ("suppressed", "tenant_inactive")
    assert await db.fetchval("SELECT count(*) FROM conv_calls") == 1  # the data is kept
    assert (await client.get("/api/onboarding", headers=headers)).status_code == 403


async def test_the_test_call_rings_the_number_from_our_test_line(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    assert (await client.post("/api/onboarding/test-call", headers=headers)).status_code == 404  # no number yet
    await buy(client, headers, "+15125550001")
    placed = await client.post("/api/onboarding/test-call", headers=headers)
    assert placed.status_code == 201, placed.text
    call = twilio.calls()[0]
    assert (call["to"], call["from"], placed.json()["call_sid"]) == ("+15125550001", TEST_LINE, call["sid"])
    assert "<Pause" in call["twiml"]
    steps = {s["key"]: s for s in (await client.get("/api/onboarding", headers=headers)).json()["steps"]}
    assert (steps["test_call"]["done"], steps["test_call"]["detail"]) == (False, "placed, not arrived yet")
    # Twilio calls the number: an ordinary call (missed: the forwarding number is not verified yet).
    inbound = {"CallSid": "CA" + "4" * 32, "From": TEST_LINE, "To": "+15125550001", "CallStatus": "ringing"}
    await post_twilio(client, "/webhooks/twilio/voice", inbound)
    await dispatch_all(db)
    steps = {s["key"]: s for s in (await client.get("/api/onboarding", headers=headers)).json()["steps"]}
    assert steps["test_call"]["done"]
    assert await db.fetchval(
        "SELECT count(*) FROM conv_messages WHERE kind = 'first_sms' AND to_number = $1", TEST_LINE
    )
    assert (await client.post("/api/onboarding/test-call", headers=headers)).status_code == 429


async def test_sync_webhooks_fixes_drift_after_the_public_url_moves(
    client: AsyncTestClient[Any], db: asyncpg.Connection, clerk: FakeClerk, twilio: Any
) -> None:
    headers = owner(clerk)
    await buy(client, headers, "+15125550001")
    tenant_id = await db.fetchval("SELECT id FROM tenants WHERE clerk_org_id = 'org_shop'")
    twilio.add_existing_number("+15125550999", f"nmc:{tenant_id}", VoiceUrl="https://old.example/voice")
    env = {"TWILIO_API_BASE_URL": twilio.base_url, "PUBLIC_BASE_URL": "https://new.example.com", "LOG_LEVEL": "ERROR"}
    dry = run_cli("numbers", "sync-webhooks", "--dry-run", env=env)
    assert "would change VoiceUrl" in dry.stdout
    assert twilio.incoming_numbers()[1]["voice_url"] == f"{PUBLIC}/webhooks/twilio/voice"
    fixed = run_cli("numbers", "sync-webhooks", "--all", env=env)
    assert "+15125550001" in fixed.stdout and "changed VoiceUrl" in fixed.stdout
    assert "tagged but not stored" in fixed.stdout
    urls = {n["phone_number"]: n["voice_url"] for n in twilio.incoming_numbers()}
    assert urls["+15125550001"] == urls["+15125550999"] == "https://new.example.com/webhooks/twilio/voice"
    assert urls[TEST_LINE] is None  # not ours: untouched
    again = run_cli("numbers", "sync-webhooks", "--tenant", str(tenant_id), env=env)
    assert "0 fixed" in again.stdout and UUID(str(tenant_id))

"""Issue #10 against the real app, dispatcher and database with the fake Twilio API: refusals by whose
fault they are (rate limit, our account, the recipient, unknown), the sending circuit shared by every
sender, the exactly-once lookup after an unknown outcome (queued texts, paging, smart encoding), and
status callbacks that arrive before their SID is recorded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient

from nmc.db import hot_transaction
from nmc.messaging.circuit import PROBE_INTERVAL, close_circuit, note_unavailable, open_circuit
from nmc.messaging.sms import SmsAccountRefused, SmsOutcomeUnknown
from tests.conftest import TEST_DATABASE_URL, TWILIO_SID, TWILIO_TOKEN
from tests.integration.test_first_sms import dispatch_pending, first_sms_rows
from tests.integration.test_inbox_support import dispatch_all, messages, sent_to, texted_back
from tests.integration.twilio_webhooks import missed_call, post_twilio

CALLER = "+15557654321"
OTHER_CALLER = "+15557650001"
STATUS_PATH = "/webhooks/twilio/sms/status"


async def call_missed_row(db: asyncpg.Connection, caller: str = CALLER) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT *, available_at - now() AS wait FROM outbox_events WHERE event_name = 'call.missed'"
        " AND payload->>'caller' = $1",
        caller,
    )


async def parked(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM outbox_events_errors"))


def created(fake_twilio: Any) -> list[dict[str, Any]]:
    return [m for m in fake_twilio.messages() if m["sid"]]


# ---------------------------------------------------------------- 429
async def test_a_429_puts_the_text_back_to_wait_for_retry_after_without_spending_an_attempt(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"status": 429, "code": 20429, "retry_after": 7}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)

    [message] = await first_sms_rows(db)
    assert (message["status"], message["error_code"], message["twilio_sid"]) == ("pending", None, None)
    outbox = await call_missed_row(db)
    assert outbox["dispatched_at"] is None and outbox["attempts"] == 0
    assert timedelta(seconds=5) < outbox["wait"] <= timedelta(seconds=7)
    assert outbox["last_error"] == "deferred: Twilio rate limit (429)"
    assert await parked(db) == 0

    await db.execute("UPDATE outbox_events SET available_at = now() WHERE id = $1", outbox["id"])
    await dispatch_pending(db)
    [text] = created(fake_twilio)
    [message] = await first_sms_rows(db)
    assert (message["status"], message["twilio_sid"]) == ("accepted", text["sid"])


# ---------------------------------------------------------------- our account: the sending circuit
async def test_an_account_refusal_pauses_sending_for_everyone_until_an_accepted_probe(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"status": 401, "code": 20003}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)

    [message] = await first_sms_rows(db)
    assert (message["status"], message["error_code"]) == ("paused", None)  # not the text's fault
    state = await db.fetchrow("SELECT * FROM sms_sending_state")
    assert state["circuit_opened_at"] is not None
    assert (state["circuit_http_status"], state["circuit_code"]) == (401, 20003)
    outbox = await call_missed_row(db)
    assert outbox["dispatched_at"] is None and outbox["attempts"] == 0
    assert outbox["available_at"] == state["circuit_probe_at"]
    assert PROBE_INTERVAL - timedelta(seconds=4) < outbox["wait"] <= PROBE_INTERVAL
    assert outbox["last_error"] == "deferred: sending circuit open"
    assert await parked(db) == 0

    # Another caller's text waits too, without a request to Twilio; the gauge pages.
    await missed_call(client, tenant.number, OTHER_CALLER)
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1
    assert [m["status"] for m in await first_sms_rows(db)] == ["paused", "paused"]
    other = await call_missed_row(db, OTHER_CALLER)
    assert other["last_error"] == "deferred: sending circuit open" and other["attempts"] == 0
    metrics = (await client.get("/metrics")).text
    assert 'sms_sending_circuit_open{cause="account"} 1.0' in metrics
    assert 'sms_sending_circuit_opened_timestamp_seconds{code="20003"' in metrics

    # The probe is due; Twilio still refuses: the circuit stays open, the next probe is PROBE_INTERVAL on.
    await db.execute("UPDATE sms_sending_state SET circuit_probe_at = now() - interval '1 second'")
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE id = $1", outbox["id"])
    fake_twilio.script([{"status": 401, "code": 20003}])
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 2
    still = await db.fetchrow("SELECT * FROM sms_sending_state")
    assert still["circuit_opened_at"] == state["circuit_opened_at"]
    assert still["circuit_probe_at"] > datetime.now(UTC) + PROBE_INTERVAL - timedelta(seconds=4)
    assert await parked(db) == 0

    # Twilio accepts again: the first text due wins the probe, its acceptance closes the circuit and
    # releases the text that waited, which goes out on the next dispatch.
    await db.execute("UPDATE sms_sending_state SET circuit_probe_at = now() - interval '1 second'")
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE id = $1", outbox["id"])
    await dispatch_pending(db)
    assert await db.fetchval("SELECT circuit_opened_at FROM sms_sending_state") is None
    assert (await call_missed_row(db, OTHER_CALLER))["wait"] <= timedelta(0)  # released
    await dispatch_pending(db)
    assert sorted(m["form"]["To"] for m in created(fake_twilio)) == sorted([CALLER, OTHER_CALLER])
    assert [m["status"] for m in await first_sms_rows(db)] == ["accepted", "accepted"]
    assert 'sms_sending_circuit_open{cause="account"} 0.0' in (await client.get("/metrics")).text


async def test_one_sender_at_a_time_wins_a_due_probe(db: asyncpg.Connection) -> None:
    from nmc.messaging import Send, Wait, claim_probe

    await db.execute(
        "INSERT INTO sms_sending_state (id, circuit_opened_at, circuit_probe_at)"
        " VALUES (1, now() - interval '1 minute', now() - interval '1 second')"
    )
    connections = [await asyncpg.connect(TEST_DATABASE_URL) for _ in range(4)]

    async def claim(connection: asyncpg.Connection) -> Send | Wait:
        async with connection.transaction():  # held a moment, as a planning transaction is
            verdict = await claim_probe(connection, datetime.now(UTC))
            await asyncio.sleep(0.05)
            return verdict

    try:
        verdicts = await asyncio.gather(*(claim(c) for c in connections))
    finally:
        for connection in connections:
            await connection.close()
    assert [v for v in verdicts if isinstance(v, Send)] == [Send(probe=True)]
    waits = [v for v in verdicts if isinstance(v, Wait)]
    assert len(waits) == 3 and all(w.until > datetime.now(UTC) + PROBE_INTERVAL - timedelta(seconds=4) for w in waits)


async def test_an_account_refusal_holds_every_other_text_too(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    fake_twilio.script([{"status": 403, "code": 20005}], to=CALLER)  # account not active
    await client.post(f"/api/threads/{thread_id}/messages", json={"body": "On our way"}, headers=tenant.headers)
    await dispatch_all(db)
    [reply] = await messages(db, "reply")
    assert (reply["status"], reply["error_code"]) == ("paused", None)
    assert await db.fetchval("SELECT circuit_code FROM sms_sending_state") == 20005
    event = await db.fetchrow("SELECT * FROM outbox_events WHERE event_name = 'sms.outbound_requested'")
    assert event["last_error"] == "deferred: sending circuit open" and event["attempts"] == 0

    await db.execute("UPDATE sms_sending_state SET circuit_probe_at = now() - interval '1 second'")
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE id = $1", event["id"])
    await dispatch_all(db)
    [reply] = await messages(db, "reply")
    assert reply["status"] == "accepted"
    assert await db.fetchval("SELECT circuit_opened_at FROM sms_sending_state") is None


async def test_a_rate_limited_reply_waits_as_pending(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    fake_twilio.script([{"status": 429}], to=CALLER)  # no Retry-After: a few seconds
    await client.post(f"/api/threads/{thread_id}/messages", json={"body": "On our way"}, headers=tenant.headers)
    await dispatch_all(db)
    [reply] = await messages(db, "reply")
    assert reply["status"] == "pending"
    event = await db.fetchrow(
        "SELECT *, available_at - now() AS wait FROM outbox_events WHERE event_name = 'sms.outbound_requested'"
    )
    assert event["attempts"] == 0 and timedelta(seconds=3) < event["wait"] <= timedelta(seconds=5)
    assert await db.fetchval("SELECT circuit_opened_at FROM sms_sending_state") is None


# ---------------------------------------------------------------- the recipient's refusals: final
@pytest.mark.parametrize(("code", "landline"), [(21211, False), (21614, False), (21612, False), (30006, True)])
async def test_a_recipient_refusal_is_final_with_its_reason(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, code: int, landline: bool
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"status": 400, "code": code}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    [message] = await first_sms_rows(db)
    assert (message["status"], message["error_code"]) == ("failed", code)
    assert (await call_missed_row(db))["dispatched_at"] is not None  # settled, not retried
    assert await parked(db) == 0
    marked = await db.fetchval("SELECT line_type FROM conv_phone_facts WHERE phone = $1", CALLER)
    assert marked == ("landline" if landline else None)
    assert await db.fetchval("SELECT circuit_opened_at FROM sms_sending_state") is None


# ---------------------------------------------------------------- the lookup after an unknown outcome
async def test_a_text_still_queued_at_twilio_is_found_and_not_sent_twice(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(name="Joe\u2019s Plumbing \u2013 24/7")  # Twilio's smart encoding changes the body
    fake_twilio.script([{"drop_after_create": True}])  # created at Twilio, but we saw a 500
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    [text] = created(fake_twilio)
    at_twilio = httpx.get(
        fake_twilio.messages_url, params={"To": CALLER}, auth=(TWILIO_SID, TWILIO_TOKEN), timeout=5
    ).json()["messages"]
    assert [(m["status"], m["date_sent"]) for m in at_twilio] == [("accepted", None)]  # still queued
    assert at_twilio[0]["body"] != (await first_sms_rows(db))[0]["body"]  # smart-encoded

    await db.execute("UPDATE outbox_events SET available_at = now()")
    await dispatch_pending(db)
    assert created(fake_twilio) == [text]
    [message] = await first_sms_rows(db)
    assert (message["status"], message["twilio_sid"]) == ("accepted", text["sid"])


async def test_the_lookup_pages_through_next_page_uri(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    fake_twilio: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nmc.messaging import sms

    monkeypatch.setattr(sms, "LOOKUP_PAGE_SIZE", 2)
    tenant = await make_tenant()
    fake_twilio.script([{"drop_after_create": True}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    [text] = created(fake_twilio)
    for body in ("a newer text", "and another"):  # newer texts from the same number fill page 1
        form = {"To": CALLER, "From": tenant.number, "Body": body}
        response = httpx.post(fake_twilio.messages_url, data=form, auth=(TWILIO_SID, TWILIO_TOKEN), timeout=5)
        assert response.status_code == 201

    await db.execute("UPDATE outbox_events SET available_at = now()")
    await dispatch_pending(db)
    assert created(fake_twilio)[0]["sid"] == text["sid"]
    assert len(created(fake_twilio)) == 3  # nothing was sent again
    assert (await first_sms_rows(db))[0]["twilio_sid"] == text["sid"]


# ---------------------------------------------------------------- status callbacks before the SID
async def test_a_status_callback_for_an_unknown_sid_is_applied_when_the_sid_is_recorded(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"drop_after_create": True}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    [text] = created(fake_twilio)
    for status in ("delivered", "sent"):  # a late "sent" must not move it back, even while kept
        callback = {"MessageSid": text["sid"], "MessageStatus": status}
        assert (await post_twilio(client, STATUS_PATH, callback)).status_code == 200
    kept = await db.fetchrow("SELECT * FROM conv_early_statuses")
    assert (kept["message_sid"], kept["status"]) == (text["sid"], "delivered")
    assert (await first_sms_rows(db))[0]["status"] == "sending"

    await db.execute("UPDATE outbox_events SET available_at = now()")
    await dispatch_pending(db)
    [message] = await first_sms_rows(db)
    assert (message["status"], message["twilio_sid"]) == ("delivered", text["sid"])
    assert message["latency_ms"] is not None
    assert await db.fetchval("SELECT count(*) FROM conv_early_statuses") == 0


async def test_an_early_30006_marks_the_landline_when_the_sid_is_recorded(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    thread_id = await texted_back(client, db, tenant)
    fake_twilio.script([{"drop_after_create": True}], to=CALLER)
    await client.post(f"/api/threads/{thread_id}/messages", json={"body": "Still there?"}, headers=tenant.headers)
    await dispatch_all(db)
    sid = sent_to(fake_twilio, CALLER)[-1]["sid"]
    callback = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30006"}
    assert (await post_twilio(client, STATUS_PATH, callback)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM conv_phone_facts") == 0  # no message to learn the number from

    await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")
    await dispatch_all(db)
    [reply] = await messages(db, "reply")
    assert (reply["status"], reply["error_code"], reply["twilio_sid"]) == ("undelivered", 30006, sid)
    fact = await db.fetchrow("SELECT * FROM conv_phone_facts WHERE phone = $1", CALLER)
    assert (fact["line_type"], fact["source"]) == ("landline", "twilio_30006")
    assert await db.fetchval("SELECT count(*) FROM conv_early_statuses") == 0


async def test_a_callback_for_a_known_sid_is_not_kept(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    sid = created(fake_twilio)[0]["sid"]
    for status in ("delivered", "sent"):
        await post_twilio(client, STATUS_PATH, {"MessageSid": sid, "MessageStatus": status})
    assert (await first_sms_rows(db))[0]["status"] == "delivered"
    assert await db.fetchval("SELECT count(*) FROM conv_early_statuses") == 0


# ---------------------------------------------------------------- Twilio down: the circuit, cause `unavailable`
async def test_one_5xx_is_retried_with_backoff_and_opens_nothing(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"status": 500}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)

    outbox = await call_missed_row(db)
    assert outbox["attempts"] == 1 and outbox["last_error"].startswith("SmsOutcomeUnknown")
    state = await db.fetchrow("SELECT circuit_opened_at, unavailable_count FROM sms_sending_state")
    assert (state["circuit_opened_at"], state["unavailable_count"]) == (None, 1)
    [message] = await first_sms_rows(db)
    assert message["status"] == "sending"  # it may exist at Twilio: looked up before it is sent again


async def test_a_twilio_outage_opens_the_circuit_and_texts_wait_without_spending_attempts(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.outage(status=503)
    callers = [f"+1555765{n:04d}" for n in range(4)]
    for caller in callers:
        await missed_call(client, tenant.number, caller)
    await dispatch_pending(db)  # three 5xx in a row: the third opens the circuit

    state = await db.fetchrow("SELECT * FROM sms_sending_state")
    assert state["circuit_opened_at"] is not None
    assert (state["circuit_cause"], state["circuit_http_status"]) == ("unavailable", 503)
    rows = [await call_missed_row(db, caller) for caller in callers]
    assert [r["attempts"] for r in rows] == [1, 1, 0, 0]  # the run's first two spent one; from the third, none
    assert all(r["last_error"] == "deferred: sending circuit open" for r in rows[2:])
    requests_during_outage = len(fake_twilio.messages())
    assert requests_during_outage == 3  # the fourth text waited behind the circuit without a request
    metrics = (await client.get("/metrics")).text
    assert 'sms_sending_circuit_open{cause="unavailable"} 1.0' in metrics
    assert 'sms_sending_circuit_open{cause="account"} 0.0' in metrics

    # However long Twilio stays down, the texts wait for the probe: none is parked.
    for _ in range(12):
        await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")
        await db.execute("UPDATE sms_sending_state SET circuit_probe_at = now()")
        await dispatch_pending(db)
    assert await parked(db) == 0
    assert max(r["attempts"] for r in [await call_missed_row(db, c) for c in callers]) <= 2

    # Twilio is back: the next probe closes the circuit and releases every held text, each sent once.
    fake_twilio.heal()
    await db.execute("UPDATE sms_sending_state SET circuit_probe_at = now()")
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")
    for _ in range(3):
        await dispatch_pending(db)
    state = await db.fetchrow("SELECT * FROM sms_sending_state")
    assert (state["circuit_opened_at"], state["circuit_cause"], state["unavailable_count"]) == (None, None, 0)
    assert sorted(m["form"]["To"] for m in created(fake_twilio)) == sorted(callers)
    assert {m["status"] for m in await first_sms_rows(db)} == {"accepted"}


async def test_a_text_of_unknown_outcome_waits_behind_an_open_circuit_and_is_looked_up_first(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"drop_after_create": True}])  # created at Twilio, but we saw a 500
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    [text] = created(fake_twilio)
    await db.execute(
        "UPDATE sms_sending_state SET circuit_opened_at = now(), circuit_cause = 'unavailable',"
        " circuit_probe_at = now() + interval '5 seconds'"
    )
    await db.execute("UPDATE outbox_events SET available_at = now()")
    await dispatch_pending(db)
    outbox = await call_missed_row(db)
    assert outbox["last_error"] == "deferred: sending circuit open" and outbox["attempts"] == 1
    assert len(fake_twilio.messages()) == 1  # nothing sent while the circuit is open

    # Its turn: it is the probe; the lookup finds the text, so nothing is sent twice, and it closes the circuit.
    await db.execute("UPDATE sms_sending_state SET circuit_probe_at = now()")
    await db.execute("UPDATE outbox_events SET available_at = now()")
    await dispatch_pending(db)
    assert created(fake_twilio) == [text]
    [message] = await first_sms_rows(db)
    assert (message["status"], message["twilio_sid"]) == ("accepted", text["sid"])
    assert await db.fetchval("SELECT circuit_opened_at FROM sms_sending_state") is None


async def test_an_outage_does_not_hide_a_refused_account(db: asyncpg.Connection) -> None:
    async with hot_transaction() as connection:
        await open_circuit(connection, SmsAccountRefused(401, 20003, "Authenticate"))
        await note_unavailable(connection, SmsOutcomeUnknown("Twilio 500", 500), datetime.now(UTC))
    state = await db.fetchrow("SELECT * FROM sms_sending_state")
    assert (state["circuit_cause"], state["circuit_http_status"], state["circuit_code"]) == ("account", 401, 20003)


async def test_probes_go_every_interval_from_their_start_and_soon_after_a_hung_one(db: asyncpg.Connection) -> None:
    hang = SmsOutcomeUnknown("TimeoutError talking to Twilio")
    started = datetime.now(UTC) - timedelta(seconds=5)
    async with hot_transaction() as connection:
        for _ in range(3):
            first_probe = await note_unavailable(connection, hang, started)
    assert first_probe is not None
    # Failures of requests already in flight do not push the next probe on.
    async with hot_transaction() as connection:
        assert await note_unavailable(connection, hang, started) == first_probe
    # A probe claimed 5 s ago that hung until its timeout: the next goes within a second, not 5 s later.
    await db.execute("UPDATE sms_sending_state SET circuit_probe_at = now() - interval '10 ms'")
    async with hot_transaction() as connection:
        after_hang = await note_unavailable(connection, hang, started)
    assert after_hang is not None
    wait = (after_hang - await db.fetchval("SELECT now()")).total_seconds()
    assert 0.5 < wait <= 1.0


async def test_requests_that_hung_through_a_healed_outage_do_not_open_the_circuit_again(
    db: asyncpg.Connection,
) -> None:
    hang = SmsOutcomeUnknown("TimeoutError talking to Twilio")
    during = datetime.now(UTC)
    async with hot_transaction() as connection:
        for _ in range(3):
            await note_unavailable(connection, hang, during)
        assert await close_circuit(connection)
    async with hot_transaction() as connection:  # their timeouts arrive after the probe closed it
        assert [await note_unavailable(connection, hang, during) for _ in range(5)] == [None] * 5
    state = await db.fetchrow("SELECT * FROM sms_sending_state")
    assert (state["circuit_opened_at"], state["unavailable_count"]) == (None, 0)
    async with hot_transaction() as connection:  # requests sent after it closed count again
        runs = [await note_unavailable(connection, hang, datetime.now(UTC)) for _ in range(3)]
    assert runs[:2] == [None, None] and runs[2] is not None

"""The core path in-process: signed webhooks into the real app, the real dispatcher against the
fake Twilio API, real Postgres underneath."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from nmc.events.dispatcher import dispatch
from nmc.telephony import dial_outcome_params, new_call_sid
from tests.conftest import MESSAGING_SERVICE_SID
from tests.integration.conftest import zone_at_local_hour
from tests.integration.twilio_webhooks import missed_call, post_twilio

CALLER = "+15557654321"


async def dispatch_pending(db: asyncpg.Connection) -> int:
    """Run the dispatcher over every due outbox row, as the worker would. Returns how many ran."""
    ids = await db.fetch("SELECT id FROM outbox_events WHERE dispatched_at IS NULL AND available_at <= now()")
    for row in ids:
        await dispatch(row["id"])
    return len(ids)


async def first_sms_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM conv_messages WHERE kind = 'first_sms' ORDER BY created_at")


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_missed_call_sends_exactly_one_first_sms(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(name="Joe's Plumbing")
    call_sid, response = await missed_call(client, tenant.number, CALLER)
    assert response.status_code == 200
    assert "<Say>" in response.text and "<Hangup />" in response.text

    await dispatch_pending(db)
    sent = fake_twilio.messages()
    assert len(sent) == 1
    form = sent[0]["form"]
    assert form["To"] == CALLER
    assert form["From"] == tenant.number
    assert form["MessagingServiceSid"] == MESSAGING_SERVICE_SID
    assert form["StatusCallback"].endswith("/webhooks/twilio/sms/status")
    assert "Joe's Plumbing" in form["Body"] and form["Body"].endswith("Reply STOP to opt out.")

    [message] = await first_sms_rows(db)
    assert message["twilio_sid"] == sent[0]["sid"]
    assert message["status"] == "accepted"
    assert message["latency_ms"] > 0
    call = await db.fetchrow("SELECT * FROM conv_calls WHERE call_sid = $1", call_sid)
    assert call["status"] == "missed" and call["dial_status"] == "no-answer"
    # the follow-up event for projections was published, and dispatching again changes nothing
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'sms.first_sent'") == 1
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1


async def test_answered_call_sends_nothing(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    _, response = await missed_call(client, tenant.number, CALLER, status="completed")
    assert response.status_code == 200 and "<Hangup />" in response.text and "<Say>" not in response.text
    await dispatch_pending(db)
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 0
    assert await db.fetchval("SELECT status FROM conv_calls") == "answered"
    assert fake_twilio.messages() == []


@pytest.mark.parametrize(("flag", "expected"), [("true", "missed"), ("false", "answered")])
async def test_short_completed_counts_as_missed_only_when_enabled(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, settings_env: Any, flag: str, expected: str
) -> None:
    settings_env(TREAT_SHORT_COMPLETED_AS_MISSED=flag, SHORT_COMPLETED_MAX_SECONDS="10")
    tenant = await make_tenant()
    params_sid, _ = await missed_call(client, tenant.number, CALLER, status="completed")
    # DialCallDuration is "0" in the simulated form: a voicemail that picked up at once
    assert await db.fetchval("SELECT status FROM conv_calls WHERE call_sid = $1", params_sid) == expected


async def test_retried_webhook_has_its_effect_once(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    before = counter("webhook_dedupe_hits_total", provider="twilio")
    call_sid, first = await missed_call(client, tenant.number, CALLER)
    _, again = await missed_call(client, tenant.number, CALLER, call_sid=call_sid)
    assert again.status_code == first.status_code and again.text == first.text
    assert counter("webhook_dedupe_hits_total", provider="twilio") == before + 1
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 1
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1


async def test_concurrent_deliveries_of_one_dial_outcome_have_its_effect_once(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    call_sid = new_call_sid()
    deliveries = await asyncio.gather(
        *(missed_call(client, tenant.number, CALLER, call_sid=call_sid) for _ in range(5))
    )
    assert {(response.status_code, response.text) for _, response in deliveries} == {(200, deliveries[0][1].text)}
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1
    [event] = await db.fetch("SELECT id FROM outbox_events WHERE event_name = 'call.missed'")
    assert await db.fetchval("SELECT count(*) FROM pgqueuer WHERE dedupe_key = $1", f"outbox:{event['id']}") == 1


async def test_call_missed_carries_the_id_of_the_call_row_it_moved(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    """The dial outcome's statement upserts the call and publishes `call.missed` with the upserted row's
    id: the rung call's when the incoming-call webhook came first, a new row's otherwise."""
    tenant = await make_tenant()
    rung_sid = new_call_sid()
    ringing = {"CallSid": rung_sid, "From": CALLER, "To": tenant.number, "CallStatus": "ringing"}
    assert (await post_twilio(client, "/webhooks/twilio/voice", ringing)).status_code == 200
    await missed_call(client, tenant.number, CALLER, call_sid=rung_sid)
    unrung_sid, _ = await missed_call(client, tenant.number, "+15557650000")
    published = await db.fetch(
        """SELECT e.id, e.payload->>'call_id' AS call_id, c.id AS row_id, c.call_sid
           FROM outbox_events e JOIN conv_calls c ON c.call_sid = e.payload->>'call_sid'
           WHERE e.event_name = 'call.missed'"""
    )
    assert {row["call_sid"] for row in published} == {rung_sid, unrung_sid}
    assert all(row["call_id"] == str(row["row_id"]) for row in published)
    jobs = await db.fetchval(
        "SELECT count(*) FROM pgqueuer WHERE dedupe_key = ANY($1)", [f"outbox:{row['id']}" for row in published]
    )
    assert jobs == 2


@pytest.fixture
async def call_missed_refused(db: asyncpg.Connection) -> AsyncIterator[None]:
    """The outbox refuses `call.missed` rows: a failure in the last part of the dial outcome's statement."""
    await db.execute(
        """
        CREATE FUNCTION test_refuse_call_missed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.event_name = 'call.missed' THEN RAISE EXCEPTION 'call.missed refused'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_refuse_call_missed BEFORE INSERT ON outbox_events
            FOR EACH ROW EXECUTE FUNCTION test_refuse_call_missed();
        """
    )
    try:
        yield
    finally:
        await db.execute("DROP TRIGGER IF EXISTS test_refuse_call_missed ON outbox_events")
        await db.execute("DROP FUNCTION IF EXISTS test_refuse_call_missed()")


async def test_a_dial_outcome_that_fails_part_way_records_nothing_and_its_retry_applies_it(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    fake_twilio: Any,
    call_missed_refused: None,
) -> None:
    """Ledger row, call upsert, outbox row and job are one statement: all or nothing, so Twilio's retry
    of the failed delivery is a first delivery and texts the caller once."""
    tenant = await make_tenant()
    call_sid, failed = await missed_call(client, tenant.number, CALLER)
    assert failed.status_code >= 500
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await db.fetchval("SELECT count(*) FROM conv_calls") == 0
    await db.execute("DROP TRIGGER test_refuse_call_missed ON outbox_events")
    _, retried = await missed_call(client, tenant.number, CALLER, call_sid=call_sid)
    assert retried.status_code == 200
    assert await db.fetchval("SELECT status FROM conv_calls WHERE call_sid = $1", call_sid) == "missed"
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1


async def test_same_idempotency_token_is_a_retry(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    token = {"I-Twilio-Idempotency-Token": "token-1"}
    params = {"CallSid": new_call_sid(), "From": CALLER, "To": tenant.number, "CallStatus": "ringing"}
    assert (await post_twilio(client, "/webhooks/twilio/voice", params, token)).status_code == 200
    params["CallSid"] = new_call_sid()  # a different key, but the same delivery token
    assert (await post_twilio(client, "/webhooks/twilio/voice", params, token)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 1
    assert await db.fetchval("SELECT count(*) FROM conv_calls") == 1


async def test_bad_or_missing_signature_is_403_and_stores_nothing(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    before = counter("webhook_signature_failures_total", provider="twilio")
    params = {"CallSid": new_call_sid(), "From": CALLER, "To": tenant.number, "DialCallStatus": "no-answer"}
    forged = await client.post(
        "/webhooks/twilio/voice/dial-status", data=params, headers={"X-Twilio-Signature": "bm9wZQ=="}
    )
    missing = await client.post("/webhooks/twilio/voice/dial-status", data=params)
    assert forged.status_code == missing.status_code == 403
    assert forged.headers["content-type"].startswith("application/problem+json")
    assert counter("webhook_signature_failures_total", provider="twilio") == before + 2
    for table in ("webhook_events", "conv_calls"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 0


async def test_a_body_above_twilios_limit_is_413_and_stores_nothing(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    params = dial_outcome_params(new_call_sid(), CALLER, tenant.number) | {"Padding": "x" * 70_000}
    response = await post_twilio(client, "/webhooks/twilio/voice/dial-status", params)  # correctly signed
    assert response.status_code == 413
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await db.fetchval("SELECT count(*) FROM conv_calls") == 0


async def test_unknown_number_ends_the_call_politely(client: AsyncTestClient[Any], db: asyncpg.Connection) -> None:
    params = {"CallSid": new_call_sid(), "From": CALLER, "To": "+15550000000", "CallStatus": "ringing"}
    response = await post_twilio(client, "/webhooks/twilio/voice", params)
    assert response.status_code == 200
    assert "not in service" in response.text and "<Hangup />" in response.text
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_malformed_form_is_400_problem_details(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    response = await post_twilio(
        client, "/webhooks/twilio/voice/dial-status", {"CallSid": "not-a-sid", "To": tenant.number, "From": CALLER}
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0


async def test_incoming_call_dials_the_forwarding_number(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    params = {"CallSid": new_call_sid(), "From": CALLER, "To": tenant.number, "CallStatus": "ringing"}
    response = await post_twilio(client, "/webhooks/twilio/voice", params)
    assert response.status_code == 200
    assert f"<Number>{tenant.forward_to}</Number>" in response.text
    assert 'answerOnBridge="true"' in response.text and 'timeout="20"' in response.text
    assert 'action="http://127.0.0.1:8000/webhooks/twilio/voice/dial-status"' in response.text
    assert await db.fetchval("SELECT status FROM conv_calls") == "ringing"


async def test_parent_status_is_a_fallback_that_never_texts_twice(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    call_sid = new_call_sid()
    status = {"CallSid": call_sid, "From": CALLER, "To": tenant.number, "CallStatus": "no-answer"}
    assert (await post_twilio(client, "/webhooks/twilio/voice/status", status)).status_code == 200
    await missed_call(client, tenant.number, CALLER, call_sid=call_sid)  # the dial outcome arrives late
    completed = {**status, "CallStatus": "completed", "CallDuration": "40"}
    await post_twilio(client, "/webhooks/twilio/voice/status", completed)
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 1
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1
    assert await db.fetchval("SELECT status FROM conv_calls") == "missed"


async def test_answered_dial_is_not_overridden_by_parent_status(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    call_sid, _ = await missed_call(client, tenant.number, CALLER, status="answered")
    status = {"CallSid": call_sid, "From": CALLER, "To": tenant.number, "CallStatus": "busy"}
    await post_twilio(client, "/webhooks/twilio/voice/status", status)
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 0


async def test_opted_out_caller_gets_no_text(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await db.execute(
        "INSERT INTO conv_opt_outs (id, tenant_id, phone, source) VALUES (gen_random_uuid(), $1, $2, 'keyword')",
        UUID(tenant.id),
        CALLER,
    )
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert fake_twilio.messages() == []
    [message] = await first_sms_rows(db)
    assert (message["status"], message["suppressed_reason"]) == ("suppressed", "opted_out")
    # The caller's thread is created with the planning query, as an opted-out one.
    thread = await db.fetchval("SELECT status FROM conv_threads WHERE id = $1", message["thread_id"])
    assert thread == "opted_out"


async def test_same_caller_within_cooldown_gets_one_text(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    await missed_call(client, tenant.number, CALLER)  # a second call, minutes later
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1
    statuses = [(m["status"], m["suppressed_reason"]) for m in await first_sms_rows(db)]
    assert statuses == [("accepted", None), ("suppressed", "cooldown")]


async def test_quiet_hours_delay_the_text_by_default(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(timezone=zone_at_local_hour(23))
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert fake_twilio.messages() == []
    [message] = await first_sms_rows(db)
    assert message["status"] == "scheduled" and message["scheduled_for"] is not None
    outbox = await db.fetchrow("SELECT * FROM outbox_events WHERE event_name = 'call.missed'")
    assert outbox["dispatched_at"] is None and outbox["available_at"] == message["scheduled_for"]
    assert outbox["attempts"] == 0 and outbox["last_error"].startswith("deferred")


async def test_quiet_hours_suppress_policy_records_the_reason(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant(timezone=zone_at_local_hour(2))
    await db.execute(
        "INSERT INTO conv_settings (tenant_id, quiet_hours_start, quiet_hours_end, quiet_hours_policy,"
        " cooldown_minutes) VALUES ($1, '21:00', '08:00', 'suppress', 60)",
        UUID(tenant.id),
    )
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert fake_twilio.messages() == []
    [message] = await first_sms_rows(db)
    assert (message["status"], message["suppressed_reason"]) == ("suppressed", "quiet_hours")


async def test_broken_hours_settings_fail_open(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await db.execute("UPDATE tenants SET timezone = 'Not/AZone' WHERE id = $1", UUID(tenant.id))
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1


async def test_paused_texts_wait_and_go_out_after_unpause(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, settings_env: Any
) -> None:
    from nmc.events.dispatcher import release_deferred
    from nmc.messaging import PAUSED_REASON

    settings_env(PAUSE_OUTBOUND_SMS="true")
    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert fake_twilio.messages() == []
    assert (await first_sms_rows(db))[0]["status"] == "paused"

    settings_env(PAUSE_OUTBOUND_SMS="false")
    assert await release_deferred(PAUSED_REASON) == 1
    await dispatch_pending(db)
    assert len(fake_twilio.messages()) == 1
    assert (await first_sms_rows(db))[0]["status"] == "accepted"


async def test_twilio_500_is_retried_and_sends_once(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"status": 500}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    outbox = await db.fetchrow("SELECT * FROM outbox_events WHERE event_name = 'call.missed'")
    assert outbox["attempts"] == 1 and "SmsOutcomeUnknown" in outbox["last_error"]
    assert outbox["available_at"] > outbox["created_at"]
    assert await db.fetchval("SELECT count(*) FROM pgqueuer WHERE dedupe_key LIKE '%:retry1'") == 1

    await db.execute("UPDATE outbox_events SET available_at = now() WHERE id = $1", outbox["id"])
    await dispatch_pending(db)
    created = [m for m in fake_twilio.messages() if m["sid"]]
    assert len(created) == 1
    assert (await first_sms_rows(db))[0]["twilio_sid"] == created[0]["sid"]


async def test_unknown_outcome_is_looked_up_not_resent(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"drop_after_create": True}])  # created at Twilio, but we saw a 500
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    await db.execute("UPDATE outbox_events SET available_at = now()")
    await dispatch_pending(db)
    created = [m for m in fake_twilio.messages() if m["sid"]]
    assert len(created) == 1
    [message] = await first_sms_rows(db)
    assert message["twilio_sid"] == created[0]["sid"]


async def test_21610_records_an_opt_out_and_stops(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    fake_twilio.script([{"status": 400, "code": 21610}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    assert await db.fetchval("SELECT source FROM conv_opt_outs WHERE phone = $1", CALLER) == "twilio_21610"
    assert (await first_sms_rows(db))[0]["error_code"] == 21610
    assert await db.fetchval("SELECT dispatched_at IS NOT NULL FROM outbox_events WHERE event_name = 'call.missed'")
    assert await db.fetchval("SELECT count(*) FROM outbox_events_errors") == 0


async def test_an_unknown_4xx_goes_to_the_error_table_masked(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    # A refusal that is neither the recipient's nor our account's (here our From number's): parked.
    fake_twilio.script([{"status": 400, "code": 21606, "message": f"The 'From' number cannot text {CALLER}"}])
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    parked = await db.fetchrow("SELECT * FROM outbox_events_errors")
    assert parked["event_name"] == "call.missed" and "21606" in parked["last_error"]
    assert CALLER not in parked["last_error"]
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 0


async def test_status_callbacks_update_the_message_and_never_regress(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    sid = fake_twilio.messages()[0]["sid"]
    for status in ("delivered", "sent"):  # a late "sent" arrives after "delivered"
        response = await post_twilio(
            client, "/webhooks/twilio/sms/status", {"MessageSid": sid, "MessageStatus": status}
        )
        assert response.status_code == 200
    assert (await first_sms_rows(db))[0]["status"] == "delivered"


async def test_replayed_webhook_keeps_exactly_once(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    from nmc.cli import replay_stored_webhook

    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    webhook_id = await db.fetchval("SELECT id FROM webhook_events")
    assert "voice.dial-status" in await replay_stored_webhook(webhook_id)
    await dispatch_pending(db)
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 1
    assert len(fake_twilio.messages()) == 1


async def test_a_text_changed_between_the_plans_read_and_write_is_planned_again(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    fake_twilio: Any,
    settings_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plan reads, then writes in a statement of its own: a paused text that an operator's resume
    suppresses (too old) in between is not sent over it — the write finds the row changed and the
    plan reads it again."""
    from nmc.conversations import first_sms
    from nmc.events.dispatcher import release_deferred
    from nmc.messaging import PAUSED_REASON

    settings_env(PAUSE_OUTBOUND_SMS="true")
    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    await dispatch_pending(db)
    settings_env(PAUSE_OUTBOUND_SMS="false")
    assert await release_deferred(PAUSED_REASON) == 1

    read = first_sms.load_context
    reads = 0

    async def suppressed_right_after_the_read(connection: asyncpg.Connection, event: Any) -> Any:
        nonlocal reads
        reads += 1
        context = await read(connection, event)
        if reads == 1:
            await db.execute(
                "UPDATE conv_messages SET status = 'suppressed', suppressed_reason = 'paused_too_long' "
                "WHERE kind = 'first_sms' AND status = 'paused'"
            )
        return context

    monkeypatch.setattr(first_sms, "load_context", suppressed_right_after_the_read)
    await dispatch_pending(db)
    assert reads == 2
    assert fake_twilio.messages() == []
    [message] = await first_sms_rows(db)
    assert (message["status"], message["suppressed_reason"]) == ("suppressed", "paused_too_long")


async def test_the_plans_context_query_commits_without_waiting_for_the_disk(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    """ADR 0021: the context query's writes (the missed-call fact, the thread) commit with
    `synchronous_commit = off`; the message written as `sending` next commits synchronously."""
    from nmc.conversations.first_sms import _UPSERT_MESSAGE, load_context
    from nmc.events import CallMissed
    from nmc.events.catalog import load_event

    tenant = await make_tenant()
    await missed_call(client, tenant.number, CALLER)
    row = await db.fetchrow(
        "SELECT event_name, event_version, payload FROM outbox_events WHERE event_name = 'call.missed'"
    )
    event = load_event(row["event_name"], row["event_version"], json.loads(row["payload"]))
    assert isinstance(event, CallMissed)
    async with db.transaction():
        _, earlier = await load_context(db, event)
        assert earlier is None and await db.fetchval("SHOW synchronous_commit") == "off"
    assert await db.fetchval("SHOW synchronous_commit") == "on"
    assert await db.fetchval("SELECT count(*) FROM conv_kpi_facts WHERE metric = 'missed_call'") == 1
    assert "async_commit" not in _UPSERT_MESSAGE

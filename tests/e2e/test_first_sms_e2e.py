"""Missed call → first SMS with the real web and worker processes and the fake Twilio API."""

from __future__ import annotations

import asyncio
import signal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from nmc.identity import TenantCreate, create_tenant
from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.conftest import MESSAGING_SERVICE_SID, TWILIO_TOKEN, run_nmc
from tests.e2e.conftest import Stack, wait_for

pytestmark = pytest.mark.e2e
CALLER = "+15557654321"


async def make_tenant(db: asyncpg.Connection, stack: Stack, n: int) -> str:
    number = f"+1555300{n:04d}"
    await create_tenant(
        TenantCreate(name=f"Shop {n}", twilio_number=number, forwarding_number="+15559990000", timezone="Etc/GMT")
    )
    await db.execute(
        "INSERT INTO conv_settings (tenant_id, quiet_hours_start, quiet_hours_end, quiet_hours_policy,"
        " cooldown_minutes) SELECT tenant_id, NULL, NULL, 'delay', 60"
        " FROM tenant_phone_numbers WHERE twilio_number = $1",
        number,
    )  # no quiet hours: these tests run at any hour
    return number


def post_dial_outcome(stack: Stack, to: str, status: str = "no-answer", call_sid: str | None = None) -> httpx.Response:
    path = "/webhooks/twilio/voice/dial-status"
    params = dial_outcome_params(call_sid or new_call_sid(), CALLER, to, status)
    url = f"{stack.base_url}{path}"
    return httpx.post(url, data=params, headers=signed_headers(url, params, TWILIO_TOKEN), timeout=5)


async def first_sms_status(db: asyncpg.Connection) -> str | None:
    return await db.fetchval("SELECT status FROM conv_messages WHERE kind = 'first_sms'")


async def test_missed_call_gets_exactly_one_text(stack: Stack, db: asyncpg.Connection, fake_twilio: Any) -> None:
    number = await make_tenant(db, stack, 1)
    response = post_dial_outcome(stack, number)
    assert response.status_code == 200 and "<Say>" in response.text
    created = fake_twilio.wait_for_messages(1)
    assert created[0]["form"]["MessagingServiceSid"] == MESSAGING_SERVICE_SID
    assert created[0]["form"]["From"] == number
    assert "Shop 1" in created[0]["form"]["Body"] and "Reply STOP" in created[0]["form"]["Body"]
    await wait_for(lambda: db.fetchval("SELECT latency_ms FROM conv_messages WHERE twilio_sid IS NOT NULL"))
    await asyncio.sleep(0.5)
    assert len(fake_twilio.messages()) == 1


async def test_answered_call_gets_no_text(stack: Stack, db: asyncpg.Connection, fake_twilio: Any) -> None:
    number = await make_tenant(db, stack, 2)
    assert post_dial_outcome(stack, number, status="answered").status_code == 200
    await asyncio.sleep(1.0)
    assert fake_twilio.messages() == []
    assert await db.fetchval("SELECT status FROM conv_calls") == "answered"


async def test_duplicate_webhook_gets_one_text(stack: Stack, db: asyncpg.Connection, fake_twilio: Any) -> None:
    number = await make_tenant(db, stack, 3)
    call_sid = new_call_sid()
    first = post_dial_outcome(stack, number, call_sid=call_sid)
    second = post_dial_outcome(stack, number, call_sid=call_sid)
    assert first.text == second.text
    fake_twilio.wait_for_messages(1)
    await asyncio.sleep(1.0)
    assert len(fake_twilio.messages()) == 1
    metrics = httpx.get(f"{stack.base_url}/metrics").text
    assert 'webhook_dedupe_hits_total{provider="twilio"}' in metrics


async def test_bad_signature_is_refused_and_nothing_stored(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    number = await make_tenant(db, stack, 4)
    params = dial_outcome_params(new_call_sid(), CALLER, number)
    response = httpx.post(
        f"{stack.base_url}/webhooks/twilio/voice/dial-status", data=params, headers={"X-Twilio-Signature": "Zm9v"}
    )
    assert response.status_code == 403
    assert await db.fetchval("SELECT count(*) FROM webhook_events") == 0
    assert await db.fetchval("SELECT count(*) FROM conv_calls") == 0
    await asyncio.sleep(0.5)
    assert fake_twilio.messages() == []


async def test_opted_out_caller_gets_no_text(stack: Stack, db: asyncpg.Connection, fake_twilio: Any) -> None:
    number = await make_tenant(db, stack, 5)
    await db.execute(
        "INSERT INTO conv_opt_outs (id, tenant_id, phone, source)"
        " SELECT gen_random_uuid(), tenant_id, $2, 'keyword' FROM tenant_phone_numbers WHERE twilio_number = $1",
        number,
        CALLER,
    )
    post_dial_outcome(stack, number)
    assert await wait_for(lambda: first_sms_status(db)) == "suppressed"
    assert fake_twilio.messages() == []


async def test_paused_texts_wait_then_go_out_after_unpause(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    stack.restart_worker(PAUSE_OUTBOUND_SMS="true")
    number = await make_tenant(db, stack, 6)
    post_dial_outcome(stack, number)
    assert await wait_for(lambda: first_sms_status(db)) == "paused"
    await asyncio.sleep(0.5)
    assert fake_twilio.messages() == []
    stack.restart_worker(PAUSE_OUTBOUND_SMS="false")  # the web keeps running
    fake_twilio.wait_for_messages(1, timeout=10)
    await wait_for(lambda: db.fetchval("SELECT status = 'accepted' FROM conv_messages WHERE kind = 'first_sms'"))
    assert len(fake_twilio.messages()) == 1


async def test_worker_killed_mid_send_still_sends_exactly_one(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    number = await make_tenant(db, stack, 7)
    fake_twilio.script([{"delay": 30}])  # Twilio creates the text but answers slowly
    post_dial_outcome(stack, number)
    fake_twilio.wait_for_messages(1)
    assert await first_sms_status(db) == "sending"
    stack.worker.stop(signal.SIGKILL)
    stack.worker = stack.start_worker()
    # the lease (3 s here) runs out, the sweeper re-enqueues, the retry finds the text at Twilio
    await wait_for(lambda: db.fetchval("SELECT twilio_sid FROM conv_messages WHERE kind = 'first_sms'"), timeout=30)
    assert len([m for m in fake_twilio.messages() if m["sid"]]) == 1


async def test_twilio_500_then_201_sends_once(stack: Stack, db: asyncpg.Connection, fake_twilio: Any) -> None:
    number = await make_tenant(db, stack, 8)
    fake_twilio.script([{"status": 500}])
    post_dial_outcome(stack, number)
    await wait_for(lambda: db.fetchval("SELECT twilio_sid FROM conv_messages WHERE kind = 'first_sms'"), timeout=20)
    attempts = [m["status"] for m in fake_twilio.messages()]
    assert attempts.count(201) == 1 and 500 in attempts


async def test_21610_records_the_opt_out(stack: Stack, db: asyncpg.Connection, fake_twilio: Any) -> None:
    number = await make_tenant(db, stack, 9)
    fake_twilio.script([{"status": 400, "code": 21610}])
    post_dial_outcome(stack, number)
    source = await wait_for(lambda: db.fetchval("SELECT source FROM conv_opt_outs WHERE phone = $1", CALLER))
    assert source == "twilio_21610"
    tenant_id = await db.fetchval("SELECT tenant_id FROM tenant_phone_numbers WHERE twilio_number = $1", number)
    assert isinstance(tenant_id, UUID)


async def test_simulate_reports_first_sms_latency(stack: Stack, db: asyncpg.Connection, fake_twilio: Any) -> None:
    number = await make_tenant(db, stack, 10)
    result = run_nmc(
        "simulate", "missed-call", "--to", number, "--from", CALLER,
        env={"PUBLIC_BASE_URL": stack.base_url, "DATABASE_URL": stack.env["DATABASE_URL"]},
    )  # fmt: skip
    assert "first SMS accepted in" in result.stdout
    assert len(fake_twilio.messages()) == 1


# Last in the module: it cuts every connection of the web and the worker.
async def test_connections_the_server_closed_are_replaced_without_an_error(
    stack: Stack, db: asyncpg.Connection, fake_twilio: Any
) -> None:
    """What a Postgres restart does to the processes' pooled connections (the server closes them all):
    the web hands out none of them again (before: one 500 per broken pooled connection), and the
    worker goes on sending."""
    number = await make_tenant(db, stack, 11)
    assert post_dial_outcome(stack, number).status_code == 200
    fake_twilio.wait_for_messages(1)
    cut = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    assert cut >= 2  # the web's pooled connection(s) and the worker's
    await asyncio.sleep(0.5)
    callers = [f"+1555765{n:04d}" for n in range(8)]
    answers = []
    for caller in callers:
        params = dial_outcome_params(new_call_sid(), caller, number, "no-answer")
        url = f"{stack.base_url}/webhooks/twilio/voice/dial-status"
        answers.append(httpx.post(url, data=params, headers=signed_headers(url, params, TWILIO_TOKEN), timeout=5))
    assert [a.status_code for a in answers] == [200] * len(callers)
    sent = fake_twilio.wait_for_messages(1 + len(callers), timeout=30)
    assert sorted(m["form"]["To"] for m in sent[1:]) == sorted(callers)
    assert "http.unhandled_error" not in stack.web.output()

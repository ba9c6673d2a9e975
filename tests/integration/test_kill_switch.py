"""The kill switch at runtime (issue #13): `nmc pause-sms` / `nmc resume-sms` as an operator runs them,
against the dispatcher every worker runs (the decision reads the pause at each text: no restart)."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import timedelta
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient

from tests.conftest import run_cli
from tests.integration.test_first_sms import dispatch_pending
from tests.integration.test_observability import sample_value
from tests.integration.twilio_webhooks import missed_call


async def nmc(*args: str, check: bool = True, input_: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command as an operator types it, in-process (`test_kill_switch_e2e.py` runs the real `just`
    recipes). `check`: it must succeed (not with `input_`: answering a prompt may abort on purpose)."""
    return await asyncio.to_thread(run_cli, *args, input_=input_, check=check and input_ is None)


async def release_due(db: asyncpg.Connection) -> None:
    await db.execute("UPDATE outbox_events SET available_at = now() WHERE dispatched_at IS NULL")


async def test_a_pause_holds_texts_at_the_next_decision_and_a_resume_sends_them(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    paused = await nmc("pause-sms", "--reason", "Twilio 5xx flood", "--by", "oncall")
    assert "outbound SMS paused" in paused.stdout
    await missed_call(client, tenant.number, "+15557001001")
    await dispatch_pending(db)  # the same process, no restart: the decision read the pause
    assert fake_twilio.messages() == []
    assert await db.fetchval("SELECT status FROM conv_messages WHERE kind = 'first_sms'") == "paused"
    assert await db.fetchval("SELECT last_error FROM outbox_events WHERE event_name = 'call.missed'") == (
        "deferred: PAUSE_OUTBOUND_SMS"
    )

    status = (await nmc("pause-sms", "--status")).stdout
    assert "operator pause: PAUSED since" in status and "by oncall: Twilio 5xx flood" in status
    assert "texts waiting as paused: 1" in status and "0 waited longer than PAUSE_MAX_AGE_MINUTES=60" in status
    text = (await client.get("/metrics")).text
    assert sample_value(text, "sms_paused_by_operator") == 1
    assert sample_value(text, "sms_paused_by_operator_since_timestamp_seconds", reason="Twilio 5xx flood")

    resumed = await nmc("resume-sms", "--yes")
    assert (
        "outbound SMS resumed: 0 texts suppressed" in resumed.stdout and "1 waiting events released" in resumed.stdout
    )
    await dispatch_pending(db)  # released now, not at its next recheck
    assert len(fake_twilio.messages()) == 1
    assert sample_value((await client.get("/metrics")).text, "sms_paused_by_operator") == 0
    again = await nmc("resume-sms", "--yes", check=False)
    assert again.returncode != 0 and "not paused" in again.stderr


async def test_texts_paused_too_long_are_suppressed_on_resume_and_counted_after_the_operator_saw_how_many(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any
) -> None:
    tenant = await make_tenant()
    await nmc("pause-sms", "--reason", "maintenance")
    await missed_call(client, tenant.number, "+15557002001")
    await missed_call(client, tenant.number, "+15557002002")
    await dispatch_pending(db)
    await db.execute(  # one of them has waited two hours
        "UPDATE conv_messages SET created_at = now() - $1::interval WHERE to_number = '+15557002001'",
        timedelta(hours=2),
    )
    declined = await nmc("resume-sms", input_="n\n")
    assert declined.returncode != 0
    assert "texts waiting as paused: 2" in declined.stdout and "1 waited longer than" in declined.stdout
    assert "operator pause: PAUSED" in (await nmc("pause-sms", "--status")).stdout  # nothing changed

    resumed = await nmc("resume-sms", input_="y\n")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 texts suppressed (waited over 60 min, reason paused_too_long)" in resumed.stdout
    await dispatch_pending(db)
    assert [m["form"]["To"] for m in fake_twilio.messages()] == ["+15557002002"]
    stale = await db.fetchrow("SELECT status, suppressed_reason FROM conv_messages WHERE to_number = '+15557002001'")
    assert dict(stale) == {"status": "suppressed", "suppressed_reason": "paused_too_long"}
    undispatched = "SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL AND event_name = 'call.missed'"
    assert await db.fetchval(undispatched) == 0  # the suppressed text's event is settled too
    assert sample_value((await client.get("/metrics")).text, "sms_suppressed_after_pause_total") == 1


async def test_status_shows_a_pause_caused_by_a_twilio_credential_failure(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO sms_sending_state (id, circuit_opened_at, circuit_http_status, circuit_code, circuit_reason, "
        "circuit_probe_at) VALUES (1, now(), 401, 20003, 'Authenticate', now() + interval '30 seconds') "
        "ON CONFLICT (id) DO UPDATE SET circuit_opened_at = EXCLUDED.circuit_opened_at, "
        "circuit_http_status = 401, circuit_code = 20003, circuit_reason = 'Authenticate', "
        "circuit_probe_at = EXCLUDED.circuit_probe_at"
    )
    status = (await nmc("pause-sms", "--status")).stdout
    assert "operator pause: not paused" in status
    assert "sending circuit: OPEN since" in status and "(401, code 20003: Authenticate)" in status


async def test_pause_needs_a_reason(db: asyncpg.Connection) -> None:
    refused = await nmc("pause-sms", check=False)
    assert refused.returncode != 0 and "say why" in refused.stderr


async def test_status_tells_a_twilio_outage_from_a_credential_failure(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO sms_sending_state (id, circuit_opened_at, circuit_http_status, circuit_reason, circuit_probe_at,"
        " circuit_cause) VALUES (1, now(), 503, 'Twilio unavailable: Twilio 503', now() + interval '5 seconds',"
        " 'unavailable') ON CONFLICT (id) DO UPDATE SET circuit_opened_at = EXCLUDED.circuit_opened_at,"
        " circuit_http_status = 503, circuit_code = NULL, circuit_reason = EXCLUDED.circuit_reason,"
        " circuit_probe_at = EXCLUDED.circuit_probe_at, circuit_cause = 'unavailable'"
    )
    status = (await nmc("pause-sms", "--status")).stdout
    assert "sending circuit: OPEN since" in status and "Twilio is down (5xx/timeouts)" in status
    assert "refused our credentials" not in status

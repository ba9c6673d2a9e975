"""The operators' REST API (issue #13): the kill switch of `just pause-sms` / `just resume-sms` over HTTP,
for operators only (`OPS_API_TOKEN`), never tenants. Same functions as the CLI (`nmc.ops`), so the same
approach as test_kill_switch.py: the dispatcher every worker runs reads the pause at its next decision."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from tests.integration.test_first_sms import dispatch_pending
from tests.integration.test_kill_switch import nmc
from tests.integration.test_observability import sample_value
from tests.integration.twilio_webhooks import missed_call

TOKEN = "ops-token-for-tests-0123456789abcdefghijkl"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/ops/sms-sending"


@pytest.fixture
def ops_token(settings_env: Any) -> None:
    settings_env(OPS_API_TOKEN=TOKEN)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_a_tenant_token_is_refused_even_an_organisation_admins(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, clerk: Any, ops_token: None
) -> None:
    tenant = await make_tenant()
    admin = {"Authorization": f"Bearer {clerk.mint(org_id=tenant.org_id, role='org:admin', exp_in=600)}"}
    operator_role = {"Authorization": f"Bearer {clerk.mint(org_id=tenant.org_id, role='org:operator', exp_in=600)}"}
    for headers in (tenant.headers, admin, operator_role, {"Authorization": f"Bearer {TOKEN}x"}):
        body = assert_problem(await client.get(URL, headers=headers), 403)
        assert "Operators only" in body["detail"]
        refused = await client.post(URL, headers=headers, json={"action": "pause", "by": "me", "reason": "x"})
        assert_problem(refused, 403)
    unauthenticated = await client.get(URL)
    assert_problem(unauthenticated, 401)
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    assert await db.fetchval("SELECT paused_at FROM sms_sending_state") is None  # nothing paused
    assert (await client.get("/api/tenant", headers=tenant.headers)).status_code == 200  # tenants' API unchanged


async def test_without_ops_api_token_the_routes_do_not_exist(
    client: AsyncTestClient[Any], db: asyncpg.Connection, settings_env: Any
) -> None:
    settings_env(OPS_API_TOKEN="")
    assert_problem(await client.get(URL, headers=OPERATOR), 404)
    assert_problem(await client.post(URL, headers=OPERATOR, json={"action": "pause", "by": "a", "reason": "b"}), 404)


async def test_the_operator_pauses_the_next_decision_holds_the_status_counts_and_a_resume_sends(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, ops_token: None
) -> None:
    tenant = await make_tenant()
    paused = await client.post(URL, headers=OPERATOR, json={"action": "pause", "by": "dana", "reason": "Twilio 5xx"})
    assert paused.status_code == 200, paused.text
    started = time.monotonic()
    await missed_call(client, tenant.number, "+15557101001")
    await missed_call(client, tenant.number, "+15557101002")
    await dispatch_pending(db)  # the dispatcher every worker runs, no restart: the decision read the pause
    assert time.monotonic() - started < 1.0
    assert fake_twilio.messages() == []
    assert [r["status"] for r in await db.fetch("SELECT status FROM conv_messages")] == ["paused", "paused"]
    await db.execute(  # one of them has waited two hours: a resume suppresses it
        "UPDATE conv_messages SET created_at = now() - $1::interval WHERE to_number = '+15557101001'",
        timedelta(hours=2),
    )

    status = (await client.get(URL, headers=OPERATOR)).json()
    assert status["paused"] is True and status["paused_by"] == "dana (ops API)"
    assert status["pause_reason"] == "Twilio 5xx"
    assert (status["texts_waiting"], status["texts_stale"], status["pause_max_age_minutes"]) == (2, 1, 60)
    assert status["circuit"]["open"] is False
    cli = (await nmc("pause-sms", "--status")).stdout  # one state: the CLI sees the API's pause
    assert "by dana (ops API): Twilio 5xx" in cli and "texts waiting as paused: 2" in cli
    assert sample_value((await client.get("/metrics")).text, "sms_paused_by_operator") == 1

    again = (await client.post(URL, headers=OPERATOR, json={"action": "pause", "by": "eve", "reason": "other"})).json()
    assert again["status"]["paused_at"] == status["paused_at"]  # still the same pause, now in eve's hands
    assert (again["status"]["paused_by"], again["status"]["pause_reason"]) == ("eve (ops API)", "other")

    resumed = await client.post(URL, headers=OPERATOR, json={"action": "resume", "by": "dana"})
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert (body["suppressed"], body["released"]) == (1, 2)  # both events due now; the stale one settles unsent
    assert body["status"]["paused"] is False and body["status"]["suppressed_after_pause_total"] == 1
    await dispatch_pending(db)
    assert [m["form"]["To"] for m in fake_twilio.messages()] == ["+15557101002"]
    stale = await db.fetchrow("SELECT status, suppressed_reason FROM conv_messages WHERE to_number = '+15557101001'")
    assert dict(stale) == {"status": "suppressed", "suppressed_reason": "paused_too_long"}
    undispatched = "SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL AND event_name = 'call.missed'"
    assert await db.fetchval(undispatched) == 0

    not_paused = await client.post(URL, headers=OPERATOR, json={"action": "resume", "by": "dana"})
    assert "not paused" in assert_problem(not_paused, 409)["detail"]


async def test_status_shows_the_sending_circuit(
    client: AsyncTestClient[Any], db: asyncpg.Connection, ops_token: None
) -> None:
    await db.execute(
        "INSERT INTO sms_sending_state (id, circuit_opened_at, circuit_http_status, circuit_code, circuit_reason, "
        "circuit_probe_at) VALUES (1, now(), 401, 20003, 'Authenticate', now() + interval '5 seconds')"
    )
    status = (await client.get(URL, headers=OPERATOR)).json()
    assert status["paused"] is False
    circuit = status["circuit"]
    assert circuit["open"] is True and (circuit["http_status"], circuit["code"]) == (401, 20003)
    assert circuit["reason"] == "Authenticate" and circuit["next_probe_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "pause", "by": "dana"}, "reason"),
        ({"action": "pause", "by": "dana", "reason": "   "}, "reason"),
        ({"action": "pause", "by": "  ", "reason": "flood"}, "by"),
        ({"action": "pause", "reason": "flood"}, "by"),
        ({"action": "stop", "by": "dana", "reason": "flood"}, "action"),
        ({"action": "pause", "by": "d" * 100, "reason": "flood"}, "by"),
        ({"action": "pause", "by": "dana", "reason": "r" * 201}, "reason"),
        ({"action": "pause", "by": "dana", "reason": "flood", "force": True}, "force"),
        ({"action": "pause", "by": "dana", "reason": "nul \u0000"}, "reason"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(
    client: AsyncTestClient[Any], db: asyncpg.Connection, ops_token: None, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await client.post(URL, headers=OPERATOR, json=body), 422)
    assert problem["field"] == field, problem
    assert await db.fetchval("SELECT paused_at FROM sms_sending_state") is None


def test_a_short_ops_api_token_stops_the_start_naming_it() -> None:
    from nmc.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"^OPS_API_TOKEN: at least 32 characters"):
        load_settings({"OPS_API_TOKEN": "letmein"})
    assert load_settings({"OPS_API_TOKEN": f" {TOKEN} "}).OPS_API_TOKEN == TOKEN

"""Hostile but correctly signed Twilio webhooks: every field fits its column or is a 400 naming it,
never a 500; withheld caller IDs are recorded as missed calls and get no text."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from structlog.testing import CapturingLogger

from nmc.telephony import dial_outcome_params, new_call_sid
from tests.integration.test_inbox_support import INBOUND_PATH, inbound_params, new_message_sid
from tests.integration.twilio_webhooks import post_twilio

CALLER = "+15557654321"
DIAL_STATUS = "/webhooks/twilio/voice/dial-status"
SIP_CALLER = "sip:" + "someone.with.a.long.name" * 8 + "@example.sip.twilio.com"  # 219 characters
TOKEN_HEADER = "I-Twilio-Idempotency-Token"


async def stored(db: asyncpg.Connection) -> int:
    """Rows the pipeline or a handler would have written."""
    return int(
        await db.fetchval(
            "SELECT (SELECT count(*) FROM webhook_events) + (SELECT count(*) FROM conv_calls)"
            " + (SELECT count(*) FROM conv_messages)"
            " + (SELECT count(*) FROM outbox_events WHERE event_name <> 'tenant.created')"
        )
    )


def assert_refused(response: Any, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == field


def dial_outcome(to: str, caller: str = CALLER, **overrides: str) -> dict[str, str]:
    return dial_outcome_params(new_call_sid(), caller, to) | overrides


async def test_a_long_sip_caller_is_a_missed_call_without_a_text(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    params = dial_outcome(tenant.number, SIP_CALLER)
    incoming = {"CallSid": params["CallSid"], "From": SIP_CALLER, "To": tenant.number, "CallStatus": "ringing"}
    assert (await post_twilio(client, "/webhooks/twilio/voice", incoming)).status_code == 200
    assert (await post_twilio(client, DIAL_STATUS, params)).status_code == 200
    call = await db.fetchrow("SELECT caller, status FROM conv_calls")
    assert (call["caller"], call["status"]) == (SIP_CALLER, "missed")
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 0


async def test_a_text_from_a_long_address_joins_a_thread(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    body = "é" * 1600  # a concatenated SMS at Twilio's limit
    response = await post_twilio(client, INBOUND_PATH, inbound_params(tenant.number, body, SIP_CALLER))
    assert response.status_code == 200, response.text
    message = await db.fetchrow("SELECT from_number, body FROM conv_messages")
    assert (message["from_number"], message["body"]) == (SIP_CALLER, body)
    assert await db.fetchval("SELECT caller FROM conv_threads") == SIP_CALLER


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        (DIAL_STATUS, "From", "sip:" + "x" * 252),
        (DIAL_STATUS, "DialCallStatus", "no-answer" * 3),
        (DIAL_STATUS, "DialCallStatus", "NO ANSWER"),
        (DIAL_STATUS, "DialCallDuration", "2147483648"),
        (DIAL_STATUS, "DialCallDuration", "-1"),
        ("/webhooks/twilio/voice/status", "CallStatus", "completed" * 3),
        ("/webhooks/twilio/voice/status", "CallDuration", "99999999999999999999"),
    ],
)
async def test_call_fields_that_fit_no_column_are_400_naming_them(
    client: AsyncTestClient[Any],
    db: asyncpg.Connection,
    make_tenant: Any,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    field: str,
    value: str,
) -> None:
    tenant = await make_tenant()
    log = CapturingLogger()
    monkeypatch.setattr("nmc.webhooks.pipeline.log", log)
    params = dial_outcome(tenant.number, CallStatus="completed", CallDuration="12") | {field: value}
    assert_refused(await post_twilio(client, path, params), field)
    assert await stored(db) == 0
    [malformed] = [call.kwargs for call in log.calls if call.args == ("webhook.malformed",)]
    assert malformed["field"] == field and malformed["kind"].startswith("voice.") and malformed["http_status"] == 400


@pytest.mark.parametrize(
    ("field", "value"), [("MessageStatus", "delivered" * 3), ("ErrorCode", "2147483648"), ("ErrorCode", "-5")]
)
async def test_status_callback_fields_that_fit_no_column_are_400_naming_them(
    client: AsyncTestClient[Any], db: asyncpg.Connection, field: str, value: str
) -> None:
    params = {"MessageSid": new_message_sid(), "MessageStatus": "delivered", "ErrorCode": "30006"} | {field: value}
    assert_refused(await post_twilio(client, "/webhooks/twilio/sms/status", params), field)
    assert await stored(db) == 0


@pytest.mark.parametrize("field", ["From", "Body", "OptOutType", "MediaUrl0", "SomeNewTwilioField"])
async def test_a_nul_character_in_any_sms_field_is_400_naming_it(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, field: str
) -> None:
    tenant = await make_tenant()
    params = inbound_params(tenant.number, "hello") | {field: "a\x00b"}
    assert_refused(await post_twilio(client, INBOUND_PATH, params), field)
    assert await stored(db) == 0


@pytest.mark.parametrize("field", ["From", "DialCallStatus", "Direction"])
async def test_a_nul_character_in_any_call_field_is_400_naming_it(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, field: str
) -> None:
    tenant = await make_tenant()
    params = dial_outcome(tenant.number) | {field: "no-answer\x00"}
    assert_refused(await post_twilio(client, DIAL_STATUS, params), field)
    assert await stored(db) == 0


async def test_an_idempotency_token_longer_than_the_ledger_keeps_is_400(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any
) -> None:
    tenant = await make_tenant()
    too_long = await post_twilio(client, DIAL_STATUS, dial_outcome(tenant.number), {TOKEN_HEADER: "t" * 256})
    assert_refused(too_long, TOKEN_HEADER)
    assert await stored(db) == 0
    longest = await post_twilio(client, DIAL_STATUS, dial_outcome(tenant.number), {TOKEN_HEADER: "t" * 255})
    assert longest.status_code == 200
    assert await db.fetchval("SELECT length(idempotency_token) FROM webhook_events") == 255


WITHHELD = [
    "anonymous",
    "Anonymous",
    "RESTRICTED",
    "unavailable",
    "Unknown",
    "private",
    "+266696687",
    "+8656696",
    "+7378742833",
    "+86282452253",
    "+2562533",
]


@pytest.mark.parametrize("caller", WITHHELD)
async def test_a_withheld_caller_id_is_a_missed_call_without_a_text(
    client: AsyncTestClient[Any], db: asyncpg.Connection, make_tenant: Any, fake_twilio: Any, caller: str
) -> None:
    tenant = await make_tenant()
    response = await post_twilio(client, DIAL_STATUS, dial_outcome(tenant.number, caller))
    assert response.status_code == 200 and "<Say>" in response.text  # the caller still hears the message
    call = await db.fetchrow("SELECT caller, status, dial_status FROM conv_calls")
    assert (call["caller"], call["status"], call["dial_status"]) == (caller, "missed", "no-answer")
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE event_name = 'call.missed'") == 0
    assert await db.fetchval("SELECT count(*) FROM conv_messages") == 0
    assert fake_twilio.messages() == []

"""The `just dev` loop: web and worker without Twilio credentials (the console backend), stopped and
started again against the same database, a missed call each time: both texts are recorded as sent.
Console SIDs once restarted from zero and the second text hit `twilio_sid`'s unique index."""

from __future__ import annotations

import os
import re
from pathlib import Path

import asyncpg
import httpx
import pytest

from nmc.identity import TenantCreate, create_tenant
from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.conftest import TEST_DATABASE_URL, TWILIO_TOKEN
from tests.e2e.conftest import wait_for
from tests.processes import Stack, free_port

pytestmark = pytest.mark.e2e
NUMBER = "+15553100001"
CALLERS = ("+15557651001", "+15557651002")


def post_missed_call(stack: Stack, caller: str) -> httpx.Response:
    url = f"{stack.base_url}/webhooks/twilio/voice/dial-status"
    params = dial_outcome_params(new_call_sid(), caller, NUMBER, "no-answer")
    return httpx.post(url, data=params, headers=signed_headers(url, params, TWILIO_TOKEN), timeout=5)


async def test_console_texts_are_sent_after_a_restart(db: asyncpg.Connection, tmp_path: Path) -> None:
    await create_tenant(
        TenantCreate(name="Dev Shop", twilio_number=NUMBER, forwarding_number="+15559990000", timezone="Etc/GMT")
    )
    await db.execute(
        "INSERT INTO conv_settings (tenant_id, quiet_hours_start, quiet_hours_end, quiet_hours_policy,"
        " cooldown_minutes) SELECT tenant_id, NULL, NULL, 'delay', 60"
        " FROM tenant_phone_numbers WHERE twilio_number = $1",
        NUMBER,
    )  # no quiet hours: the test runs at any hour
    port = free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "development",
        "DATABASE_URL": TEST_DATABASE_URL,
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "TWILIO_ACCOUNT_SID": "",  # no credentials: the console backend, as on a laptop
        "TWILIO_MESSAGING_SERVICE_SID": "",
        "LOG_LEVEL": "INFO",
    }
    for caller in CALLERS:  # one `just dev` run per caller
        stack = Stack(env, tmp_path)
        try:
            assert post_missed_call(stack, caller).status_code == 200

            async def sent(caller: str = caller) -> bool:
                status = await db.fetchval(
                    "SELECT status FROM conv_messages WHERE kind = 'first_sms' AND to_number = $1", caller
                )
                return status == "sent"

            await wait_for(sent, timeout=20)
            assert "[console sms]" in stack.worker.output()
        finally:
            stack.stop()
    sids = [r["twilio_sid"] for r in await db.fetch("SELECT twilio_sid FROM conv_messages WHERE kind = 'first_sms'")]
    assert len(set(sids)) == 2
    assert all(re.fullmatch(r"SM[0-9a-f]{32}", sid) for sid in sids)

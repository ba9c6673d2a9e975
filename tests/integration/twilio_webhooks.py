"""Posting Twilio-signed webhooks to the in-process app (signatures by twilio's RequestValidator)."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from nmc.telephony.simulate import dial_outcome_params, new_call_sid, signed_headers
from tests.conftest import TEST_ENVIRONMENT, TWILIO_TOKEN

PUBLIC_BASE_URL = TEST_ENVIRONMENT["PUBLIC_BASE_URL"]


async def post_twilio(
    client: AsyncTestClient[Any], path: str, params: dict[str, str], headers: dict[str, str] | None = None
) -> Any:
    signed = signed_headers(f"{PUBLIC_BASE_URL}{path}", params, TWILIO_TOKEN)
    return await client.post(path, data=params, headers={**signed, **(headers or {})})


async def missed_call(
    client: AsyncTestClient[Any], to: str, caller: str, status: str = "no-answer", call_sid: str | None = None
) -> tuple[str, Any]:
    sid = call_sid or new_call_sid()
    params = dial_outcome_params(sid, caller, to, status)
    return sid, await post_twilio(client, "/webhooks/twilio/voice/dial-status", params)

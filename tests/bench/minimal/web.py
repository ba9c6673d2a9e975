"""The minimal pipeline's web process: `python -m tests.bench.minimal.web` (env: see `Settings`)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl
from uuid import uuid4

import asyncpg
import uvicorn
from litestar import Litestar, Request, Response, get, post
from pgqueuer import AsyncpgDriver, Queries
from twilio.request_validator import RequestValidator

SEND_FIRST_SMS = "send_first_sms"
PATH = "/webhooks/twilio/voice/dial-status"
MISSED = frozenset({"no-answer", "busy", "failed", "canceled"})
TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Sorry we missed you. We will text you.</Say></Response>'
DATABASE_URL = os.environ["DATABASE_URL"]
SIGNED_URL = os.environ["PUBLIC_BASE_URL"] + PATH
VALIDATOR = RequestValidator(os.environ["TWILIO_AUTH_TOKEN"])

_RECORD_CALL = """
    INSERT INTO calls (call_sid, caller, tenant_number) VALUES ($1, $2, $3)
    ON CONFLICT (call_sid) DO NOTHING RETURNING call_sid
"""
_OUTBOX = "INSERT INTO outbox (id, call_sid, caller, tenant_number) VALUES ($1, $2, $3, $4)"


async def _no_reset(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's RESET ALL round trips (no session state is ever set)."""


async def open_pool(app: Litestar) -> None:
    app.state.pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=10, reset=_no_reset)


async def close_pool(app: Litestar) -> None:
    await app.state.pool.close()


@get("/healthz")
async def healthz() -> str:
    return "ok"


@post(PATH, status_code=200)
async def dial_status(request: Request[Any, Any, Any]) -> Response[str]:
    params = dict(parse_qsl((await request.body()).decode()))
    if not VALIDATOR.validate(SIGNED_URL, params, request.headers.get("x-twilio-signature", "")):
        return Response("bad signature", status_code=403)
    try:
        call_sid, caller, tenant_number = params["CallSid"], params["From"], params["To"]
    except KeyError as missing:
        return Response(f"missing field {missing}", status_code=400)
    if params.get("DialCallStatus") in MISSED:
        async with request.app.state.pool.acquire() as connection, connection.transaction():
            if await connection.fetchval(_RECORD_CALL, call_sid, caller, tenant_number):
                outbox_id = uuid4()
                await connection.execute(_OUTBOX, outbox_id, call_sid, caller, tenant_number)
                await Queries(AsyncpgDriver(connection)).enqueue(
                    SEND_FIRST_SMS, outbox_id.bytes, dedupe_key=f"outbox:{outbox_id}"
                )
    return Response(TWIML, media_type="application/xml")


app = Litestar([healthz, dial_status], on_startup=[open_pool], on_shutdown=[close_pool])

if __name__ == "__main__":
    uvicorn.run(
        app, host="127.0.0.1", port=int(os.environ["PORT"]), access_log=False, log_level="warning",
        loop="uvloop", http="httptools",
    )  # fmt: skip

"""Twilio's webhook routes: each hands its request to the shared pipeline with its handler (all of them
plain SQL: they run on the hot asyncpg pool, no SQLAlchemy session per request, ADR 0020)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post

from nmc.telephony.webhooks import CALL_STATUS, DIAL_OUTCOME, INBOUND_TEXT, INCOMING_CALL, MESSAGE_STATUS
from nmc.webhooks import TWILIO, receive

MAX_BODY = TWILIO.max_body_bytes


class TwilioWebhooks(Controller):
    path = "/webhooks/twilio"
    tags = ["Webhooks"]
    include_in_schema = False

    @post("/voice", request_max_body_size=MAX_BODY)
    async def incoming_call(self, request: Request[Any, Any, Any]) -> Response[str]:
        return await receive(INCOMING_CALL, request)

    @post("/voice/dial-status", request_max_body_size=MAX_BODY)
    async def dial_outcome(self, request: Request[Any, Any, Any]) -> Response[str]:
        return await receive(DIAL_OUTCOME, request)

    @post("/voice/status", request_max_body_size=MAX_BODY)
    async def call_status(self, request: Request[Any, Any, Any]) -> Response[str]:
        return await receive(CALL_STATUS, request)

    @post("/sms", request_max_body_size=MAX_BODY)
    async def inbound_sms(self, request: Request[Any, Any, Any]) -> Response[str]:
        return await receive(INBOUND_TEXT, request)

    @post("/sms/status", request_max_body_size=MAX_BODY)
    async def message_status(self, request: Request[Any, Any, Any]) -> Response[str]:
        return await receive(MESSAGE_STATUS, request)

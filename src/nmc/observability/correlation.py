"""Correlation ids: taken from `X-Request-ID` (or made), echoed back, carried into every event."""

from __future__ import annotations

import re
import time
import uuid
from contextvars import ContextVar

import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,100}$")
_current: ContextVar[str | None] = ContextVar("correlation_id", default=None)
log = structlog.get_logger(module="http")


def current_correlation_id() -> str:
    """The id of the request (or job) being served; a fresh one outside any."""
    return _current.get() or new_correlation_id()


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def use_correlation_id(value: str) -> None:
    _current.set(value)
    structlog.contextvars.bind_contextvars(correlation_id=value)


def _incoming(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == HEADER.encode():
            candidate = value.decode("latin-1")
            if _VALID.match(candidate):
                return candidate
    return new_correlation_id()


def correlation_middleware(app: ASGIApp) -> ASGIApp:
    """Bind the correlation id for the request, return it, and log one line per request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        structlog.contextvars.clear_contextvars()
        correlation_id = _incoming(scope)
        use_correlation_id(correlation_id)
        started = time.perf_counter()
        status: dict[str, int] = {}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                MutableScopeHeaders.from_message(message)[HEADER] = correlation_id
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            if scope["path"] not in {"/metrics", "/healthz"}:
                log.info(
                    "http.request",
                    method=scope.get("method"),
                    path=scope["path"],
                    http_status=status.get("code", 500),
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )

    return middleware

"""The HTTP client the calendar providers share: one per event loop (connection pool, TLS sessions),
so a live check before a booking never pays a handshake, and a loop that closed (tests run several)
leaves nothing behind."""

from __future__ import annotations

import asyncio

import httpx

REQUEST_TIMEOUT_SECONDS = 20.0  # a whole request to a provider; live checks pass a shorter one

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def provider_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        for stale in [other for other in _clients if other.is_closed()]:
            _clients.pop(stale, None)
        client = _clients[loop] = httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False)
    return client

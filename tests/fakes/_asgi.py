"""Minimal raw-ASGI plumbing shared by the fake provider servers.

Raw ASGI (no framework) keeps per-request overhead tiny, which matters for the
latency benchmarks that drive the fakes.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query_string: bytes
    headers: dict[bytes, bytes]
    body: bytes
    received_at: float


@dataclass(slots=True)
class Response:
    status: int
    payload: Any
    headers: list[Header] = field(default_factory=list)


async def read_request(scope: Scope, receive: Receive, received_at: float) -> Request:
    headers = {name.lower(): value for name, value in scope["headers"]}
    return Request(
        method=scope["method"],
        path=scope["path"],
        query_string=scope.get("query_string", b""),
        headers=headers,
        body=await read_body(receive),
        received_at=received_at,
    )


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_json(send: Send, response: Response) -> None:
    if response.status == 204:  # No Content (a Twilio delete): no body, no content type
        await send({"type": "http.response.start", "status": 204, "headers": list(response.headers)})
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps(response.payload, separators=(",", ":")).encode()
    headers: list[Header] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def drain_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge lifespan events (only used if a server enables lifespan)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening-ready TCP socket; port 0 picks a free port atomically."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def socket_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def make_server(
    app: Callable[..., Awaitable[None]], server_class: type[uvicorn.Server] = uvicorn.Server
) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        interface="asgi3",
        proxy_headers=False,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    return server_class(config)


class ThreadedServer:
    """Runs a uvicorn server for an ASGI app in a daemon thread."""

    def __init__(self, app: Callable[..., Awaitable[None]], host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = bind_socket(host, port)
        self._server = make_server(app)
        self._thread = threading.Thread(target=self._server.run, args=([self._sock],), daemon=True)
        self.url = socket_url(self._sock)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server for {self.url} failed to start")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()


def header_pairs(items: Iterable[tuple[str, str]]) -> list[Header]:
    return [(name.encode(), value.encode()) for name, value in items]

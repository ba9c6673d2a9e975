"""Fake Stripe API speaking the wire format the `stripe` SDK uses, with state, signed webhook deliveries
and fault injection (the official stripe-mock is a Go binary, and stateless).

Wire format: `Authorization: Bearer <secret key>`; v1 bodies and queries form-encoded in bracket
notation (`line_items[0][price]`, `created[gte]`, `types[0]`); JSON answers with `object`; lists as
`{"object": "list", "data": [...], "has_more", "url"}`, events newest first with `starting_after`;
errors as `{"error": {"type", "message", "code"}}` with the HTTP status; a POST's `Idempotency-Key`
replays the first answer (`Idempotent-Replayed: true`), or is a 400 `idempotency_error` with other
parameters. Resources: customers, checkout sessions, billing portal sessions, subscriptions (retrieve,
list), invoices (retrieve), events (list, retrieve), billing meter events (identifier deduplicated:
a 400 `resource_already_exists` by default, or the first event again, `FakeStripe.configure(
meter_duplicates="accept")`: how Stripe answers is unconfirmed, the client handles both).

Webhooks: each event is POSTed to the configured endpoint with `Stripe-Signature: t=<unix>,v1=<hex>`
(HMAC-SHA256 of `{t}.{raw body}`, Stripe's scheme), at once (`delivery="auto"`) or when the test says
(`delivery="hold"` then `deliver(...)`: any order, twice, badly signed, stale, with another secret).
The customer's side of Stripe is driven through `/_fake/` control endpoints: complete a checkout (a
subscription, its first invoice and their events), move a subscription to another status (with a
failed or paid invoice), cancel it. Subscriptions carry their billing period on their items and
invoices name their subscription under `parent.subscription_details` (API 2025-03-31 and later);
`configure(legacy_shapes=True)` gives the older shapes (period on the subscription, `invoice.subscription`).

Faults: `outage(status=503, retry_after=..., count=N, paths=[prefix], after=K, drop_after_create=True)`:
requests answered with that status (all, or the first N after K good ones, on paths with the prefix);
with `drop_after_create` the create happens and only the answer is lost.

Run standalone::

    python -m tests.fakes.stripe_api --port 0 --api-key sk_test_x

It prints ``READY http://127.0.0.1:<port>``. From pytest use :class:`FakeStripe` (a subprocess).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

import httpx
import uvicorn

from tests.fakes._asgi import (
    Receive,
    Request,
    Response,
    Scope,
    Send,
    bind_socket,
    drain_lifespan,
    header_pairs,
    make_server,
    read_request,
    send_json,
    socket_url,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_API_KEY = "sk_test_fake"
API_VERSION = "2025-03-31.basil"
DAY = 86_400
MONTH = 30 * DAY
PERIOD_STATUSES = frozenset({"trialing", "active", "past_due", "unpaid", "incomplete", "paused"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------- wire format
def _nest(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Bracket notation (`a[b][0][c]=v`) into nested dicts; dicts keyed 0..n become lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {key: _listify(value) for key, value in node.items()}
        if converted and all(key.isdigit() for key in converted):
            return [converted[key] for key in sorted(converted, key=int)]
        return converted
    return node


def parse_form(body: bytes) -> dict[str, Any]:
    return _nest(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))


def stripe_error(status: int, message: str, *, kind: str | None = None, code: str | None = None) -> Response:
    kind = kind or ("api_error" if status >= 500 else "invalid_request_error")
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    return Response(status, {"error": error}, header_pairs([("request-id", new_id("req"))]))


def listing(url: str, data: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{raw body}">`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


# --------------------------------------------------------------------------- state
class StripeState:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.checkout_sessions: dict[str, dict[str, Any]] = {}
        self.portal_sessions: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # oldest first
        self.meter_events: list[dict[str, Any]] = []  # accepted, in arrival order
        self.meter_attempts: list[dict[str, Any]] = []  # every create request, whatever the answer
        self.requests: list[dict[str, Any]] = []
        self.idempotency: dict[str, tuple[str, Response]] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.held: list[str] = []
        self.webhook_url: str | None = None
        self.webhook_secret = "whsec_fake"
        self.delivery = "auto"  # auto | hold
        self.meter_duplicates = "error"  # error | accept
        self.legacy_shapes = False
        self.outage: dict[str, Any] | None = None
        self.clock_offset = 0  # seconds added to "now" (events created later than real time)

    def now(self) -> int:
        return now() + self.clock_offset

    # -- resources
    def subscription_object(self, sub: dict[str, Any]) -> dict[str, Any]:
        shown = json.loads(json.dumps(sub))
        if self.legacy_shapes:
            item = shown["items"]["data"][0]
            shown["current_period_start"] = item.pop("current_period_start")
            shown["current_period_end"] = item.pop("current_period_end")
            for other in shown["items"]["data"][1:]:
                other.pop("current_period_start", None)
                other.pop("current_period_end", None)
        return shown

    def invoice_object(self, invoice: dict[str, Any]) -> dict[str, Any]:
        shown = json.loads(json.dumps(invoice))
        subscription = shown.pop("_subscription")
        if self.legacy_shapes:
            shown["subscription"] = subscription
        else:
            shown["parent"] = {
                "type": "subscription_details",
                "subscription_details": {"subscription": subscription, "metadata": shown.pop("_metadata", {})},
            }
        shown.pop("_metadata", None)
        return shown

    def event(self, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        self.events.append(event)
        return event

    def create_subscription(
        self, session: dict[str, Any], trial_days: int | None, status: str | None
    ) -> dict[str, Any]:
        created = self.now()
        data = session["_subscription_data"]
        trial_end = None
        if trial_days is not None:  # the test says (0: no trial, whatever the session asked)
            trial_end = created + trial_days * DAY if trial_days else None
        elif data.get("trial_end"):
            trial_end = int(data["trial_end"])
        status = status or ("trialing" if trial_end else "active")
        period_end = trial_end or created + MONTH
        items = []
        for line in session["_line_items"]:
            metered = "quantity" not in line
            items.append(
                {
                    "id": new_id("si"),
                    "object": "subscription_item",
                    "price": {
                        "id": line["price"],
                        "object": "price",
                        "recurring": {"interval": "month", "usage_type": "metered" if metered else "licensed"},
                    },
                    "quantity": None if metered else int(line["quantity"]),
                    "current_period_start": created,
                    "current_period_end": period_end,
                }
            )
        sub = {
            "id": new_id("sub"),
            "object": "subscription",
            "customer": session["customer"],
            "status": status,
            "created": created,
            "start_date": created,
            "trial_start": created if trial_end else None,
            "trial_end": trial_end,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "ended_at": None,
            "metadata": dict(data.get("metadata") or {}),
            "items": {"object": "list", "data": items, "has_more": False},
            "latest_invoice": None,
            "livemode": False,
        }
        self.subscriptions[sub["id"]] = sub
        return sub

    def create_invoice(self, sub: dict[str, Any], status: str, attempt_count: int = 1) -> dict[str, Any]:
        invoice = {
            "id": new_id("in"),
            "object": "invoice",
            "customer": sub["customer"],
            "status": status,  # paid | open
            "amount_due": 2900,
            "amount_paid": 2900 if status == "paid" else 0,
            "currency": "usd",
            "attempt_count": attempt_count,
            "next_payment_attempt": None if status == "paid" else self.now() + 3 * DAY,
            "hosted_invoice_url": "https://invoice.stripe.test/i/" + secrets.token_hex(6),
            "created": self.now(),
            "livemode": False,
            "_subscription": sub["id"],
            "_metadata": dict(sub["metadata"]),
        }
        self.invoices[invoice["id"]] = invoice
        sub["latest_invoice"] = invoice["id"]
        return invoice


# --------------------------------------------------------------------------- the app
class FakeStripeApp:
    """Raw ASGI app: the Stripe v1 API subset billing uses, plus ``/_fake/`` control endpoints."""

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        self.state = StripeState(api_key)
        self.base_url = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        received_at = time.time()
        if scope["type"] == "lifespan":
            await drain_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self.base_url:
            host, port = scope["server"][:2]
            self.base_url = f"http://{host}:{port}"
        request = await read_request(scope, receive, received_at)
        await send_json(send, await self.dispatch(request))

    async def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/_fake/"):
            return await self.control(request)
        if not request.path.startswith("/v1/"):
            return stripe_error(404, f"Unrecognized request URL ({request.method}: {request.path})")
        if request.headers.get(b"authorization", b"").decode() != f"Bearer {self.state.api_key}":
            return stripe_error(401, "Invalid API Key provided", kind="invalid_request_error")
        params = (
            parse_form(request.body)
            if request.method == "POST"
            else _nest(parse_qsl(request.query_string.decode(), keep_blank_values=True))
        )
        record = {"method": request.method, "path": request.path, "params": params}
        key = request.headers.get(b"idempotency-key", b"").decode() or None
        record["idempotency_key"] = key
        self.state.requests.append(record)
        fault = self._fault(request)
        if fault is not None and not fault.get("drop_after_create"):
            record["status"] = fault["status"]
            return self._fault_response(fault)
        if request.method == "POST" and key is not None:
            fingerprint = json.dumps([request.path, params], sort_keys=True)
            if key in self.state.idempotency:
                seen, answer = self.state.idempotency[key]
                if seen != fingerprint:
                    return stripe_error(
                        400,
                        f"Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{key}' if you meant to execute a different request.",
                        kind="idempotency_error",
                    )
                replayed = Response(answer.status, answer.payload, [*answer.headers, (b"idempotent-replayed", b"true")])
                record["replayed"] = True
                if fault is not None:  # drop_after_create: the replayed answer is lost too
                    record["status"] = fault["status"]
                    return self._fault_response(fault)
                record["status"] = replayed.status
                return replayed
        response = await self.route(request.method, request.path, params)
        if request.method == "POST" and key is not None and response.status < 500:
            self.state.idempotency[key] = (json.dumps([request.path, params], sort_keys=True), response)
        if fault is not None:  # drop_after_create: done, but the answer is lost
            record["status"] = fault["status"]
            return self._fault_response(fault)
        record["status"] = response.status
        return response

    def _fault(self, request: Request) -> dict[str, Any] | None:
        outage = self.state.outage
        if outage is None:
            return None
        paths = outage.get("paths")
        if paths and not any(request.path.startswith(prefix) for prefix in paths):
            return None
        if outage.get("after", 0) > 0:
            outage["after"] -= 1
            return None
        if "count" in outage:
            if outage["count"] <= 0:
                return None
            outage["count"] -= 1
        return outage

    @staticmethod
    def _fault_response(fault: dict[str, Any]) -> Response:
        status = int(fault["status"])
        if status == 429:
            response = stripe_error(429, "Too many requests", kind="invalid_request_error", code="rate_limit")
        else:
            response = stripe_error(status, "An unknown error occurred", kind="api_error")
        if fault.get("retry_after") is not None:
            response.headers.append((b"retry-after", str(fault["retry_after"]).encode()))
        if fault.get("should_retry") is not None:
            response.headers.append((b"stripe-should-retry", str(fault["should_retry"]).lower().encode()))
        return response

    async def route(self, method: str, path: str, params: dict[str, Any]) -> Response:
        parts = path.strip("/").split("/")[1:]  # without "v1"
        state = self.state
        if parts == ["customers"] and method == "POST":
            customer = {
                "id": new_id("cus"),
                "object": "customer",
                "name": params.get("name"),
                "email": params.get("email"),
                "metadata": params.get("metadata") or {},
                "created": state.now(),
                "livemode": False,
            }
            state.customers[customer["id"]] = customer
            return Response(200, customer)
        if len(parts) == 2 and parts[0] == "customers" and method == "GET":
            return self._found(state.customers.get(parts[1]), "customer", parts[1])
        if parts == ["checkout", "sessions"] and method == "POST":
            return self._create_checkout(params)
        if len(parts) == 3 and parts[:2] == ["checkout", "sessions"] and method == "GET":
            return self._found(self._public(state.checkout_sessions.get(parts[2])), "checkout.session", parts[2])
        if parts == ["billing_portal", "sessions"] and method == "POST":
            customer = params.get("customer")
            if customer not in state.customers:
                return stripe_error(400, f"No such customer: '{customer}'", code="resource_missing")
            portal = {
                "id": new_id("bps"),
                "object": "billing_portal.session",
                "customer": customer,
                "return_url": params.get("return_url"),
                "url": f"{self.base_url}/portal/{secrets.token_hex(8)}",
                "created": state.now(),
                "livemode": False,
            }
            state.portal_sessions[portal["id"]] = portal
            return Response(200, portal)
        if parts == ["subscriptions"] and method == "GET":
            return self._list_subscriptions(params)
        if len(parts) == 2 and parts[0] == "subscriptions" and method == "GET":
            sub = state.subscriptions.get(parts[1])
            return self._found(state.subscription_object(sub) if sub else None, "subscription", parts[1])
        if len(parts) == 2 and parts[0] == "invoices" and method == "GET":
            invoice = state.invoices.get(parts[1])
            return self._found(state.invoice_object(invoice) if invoice else None, "invoice", parts[1])
        if parts == ["events"] and method == "GET":
            return self._list_events(params)
        if len(parts) == 2 and parts[0] == "events" and method == "GET":
            return self._found(next((e for e in state.events if e["id"] == parts[1]), None), "event", parts[1])
        if parts == ["billing", "meter_events"] and method == "POST":
            return self._meter_event(params)
        return stripe_error(404, f"Unrecognized request URL ({method}: {path})")

    @staticmethod
    def _found(obj: dict[str, Any] | None, kind: str, ident: str) -> Response:
        if obj is None:
            return stripe_error(404, f"No such {kind}: '{ident}'", code="resource_missing")
        return Response(200, obj)

    @staticmethod
    def _public(obj: dict[str, Any] | None) -> dict[str, Any] | None:
        return {k: v for k, v in obj.items() if not k.startswith("_")} if obj else None

    def _create_checkout(self, params: dict[str, Any]) -> Response:
        state = self.state
        if params.get("mode") != "subscription":
            return stripe_error(400, "This fake supports mode=subscription only", code="parameter_invalid")
        customer = params.get("customer")
        if customer not in state.customers:
            return stripe_error(400, f"No such customer: '{customer}'", code="resource_missing")
        lines = params.get("line_items") or []
        if not lines or any("price" not in line for line in lines):
            return stripe_error(400, "line_items[0][price] is required", code="parameter_missing")
        for url in ("success_url", "cancel_url"):
            if not str(params.get(url, "")).startswith(("http://", "https://")):
                return stripe_error(400, f"Not a valid URL: {url}", code="url_invalid")
        data = params.get("subscription_data") or {}
        if data.get("trial_end") and int(data["trial_end"]) < state.now() + 2 * DAY:
            return stripe_error(
                400, "subscription_data[trial_end] must be at least 48 hours in the future", code="parameter_invalid"
            )
        session_id = "cs_test_" + secrets.token_hex(16)
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "subscription",
            "status": "open",
            "payment_status": "unpaid",
            "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "metadata": params.get("metadata") or {},
            "subscription": None,
            "success_url": params["success_url"],
            "cancel_url": params["cancel_url"],
            "url": f"{self.base_url}/checkout/{session_id}",
            "created": state.now(),
            "expires_at": state.now() + DAY,
            "livemode": False,
            "_line_items": lines,
            "_subscription_data": data,
        }
        state.checkout_sessions[session_id] = session
        return Response(200, self._public(session))

    def _list_subscriptions(self, params: dict[str, Any]) -> Response:
        state = self.state
        subs = [s for s in state.subscriptions.values() if s["customer"] == params.get("customer", s["customer"])]
        wanted = params.get("status")
        if wanted != "all":
            subs = (
                [s for s in subs if s["status"] == wanted] if wanted else [s for s in subs if s["status"] != "canceled"]
            )
        subs.sort(key=lambda s: s["created"], reverse=True)
        limit = int(params.get("limit", 10))
        return Response(
            200, listing("/v1/subscriptions", [state.subscription_object(s) for s in subs[:limit]], len(subs) > limit)
        )

    def _list_events(self, params: dict[str, Any]) -> Response:
        events = list(reversed(self.state.events))  # newest first
        created = params.get("created") or {}
        if isinstance(created, dict) and "gte" in created:
            events = [e for e in events if e["created"] >= int(created["gte"])]
        elif isinstance(created, str):
            events = [e for e in events if e["created"] == int(created)]
        types = params.get("types")
        if isinstance(types, list):
            events = [e for e in events if e["type"] in types]
        if params.get("type"):
            events = [e for e in events if e["type"] == params["type"]]
        if params.get("starting_after"):
            ids = [e["id"] for e in events]
            if params["starting_after"] in ids:
                events = events[ids.index(params["starting_after"]) + 1 :]
        limit = min(int(params.get("limit", 10)), 100)
        return Response(200, listing("/v1/events", events[:limit], len(events) > limit))

    def _meter_event(self, params: dict[str, Any]) -> Response:
        state = self.state
        payload = params.get("payload") or {}
        state.meter_attempts.append(dict(params))
        if not params.get("event_name"):
            return stripe_error(400, "Missing required param: event_name.", code="parameter_missing")
        customer = payload.get("stripe_customer_id")
        if customer not in state.customers:
            return stripe_error(400, f"No such customer: '{customer}'", code="resource_missing")
        value = payload.get("value")
        try:
            float(value)
        except (TypeError, ValueError):
            return stripe_error(400, "payload[value] must be a number", code="parameter_invalid")
        timestamp = int(params.get("timestamp") or state.now())
        if timestamp < state.now() - 35 * DAY or timestamp > state.now() + 300:
            return stripe_error(400, "timestamp must be within the past 35 days", code="parameter_invalid")
        identifier = params.get("identifier") or new_id("mev")
        for seen in state.meter_events:
            if seen["identifier"] == identifier:
                if state.meter_duplicates == "accept":
                    return Response(200, seen)
                return stripe_error(
                    400,
                    f"An event with identifier {identifier} already exists.",
                    code="resource_already_exists",
                )
        event = {
            "object": "billing.meter_event",
            "created": state.now(),
            "event_name": params["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": payload,
            "timestamp": timestamp,
        }
        state.meter_events.append(event)
        return Response(200, event)

    # -- the customer's side of Stripe, and deliveries
    async def emit(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.state.delivery == "hold" or not self.state.webhook_url:
            self.state.held.extend(e["id"] for e in events)
            return []
        return [await self.deliver_one(e) for e in events]

    async def deliver_one(
        self,
        event: dict[str, Any],
        *,
        signature: str = "valid",
        secret: str | None = None,
    ) -> dict[str, Any]:
        state = self.state
        assert state.webhook_url, "no webhook endpoint configured"
        body = json.dumps(event, separators=(",", ":")).encode()
        timestamp = now() - (600 if signature == "stale" else 0)
        header = sign(body, secret or state.webhook_secret, timestamp)
        if signature == "bad":
            header = sign(body, "whsec_not_the_secret", timestamp)
        elif signature == "missing":
            header = ""
        headers = {"content-type": "application/json; charset=utf-8", "user-agent": "Stripe/1.0"}
        if header:
            headers["stripe-signature"] = header
        try:
            async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
                answer = await client.post(state.webhook_url, content=body, headers=headers)
            outcome = {
                "event_id": event["id"],
                "type": event["type"],
                "status": answer.status_code,
                "body": answer.text,
            }
        except httpx.HTTPError as exc:
            outcome = {"event_id": event["id"], "type": event["type"], "status": None, "body": str(exc)}
        state.deliveries.append(outcome)
        return outcome

    async def control(self, request: Request) -> Response:
        state = self.state
        method, path = request.method, request.path
        body = json.loads(request.body or b"{}") if request.method in ("POST", "DELETE") else {}
        parts = path.strip("/").split("/")[1:]
        if (method, path) == ("POST", "/_fake/reset"):
            state.reset()
            return Response(200, {"ok": True})
        if (method, path) == ("POST", "/_fake/config"):
            for name in (
                "webhook_url",
                "webhook_secret",
                "delivery",
                "meter_duplicates",
                "legacy_shapes",
                "clock_offset",
            ):
                if name in body:
                    setattr(state, name, body[name])
            return Response(200, {"ok": True})
        if (method, path) == ("POST", "/_fake/outage"):
            state.outage = dict(body)
            return Response(200, {"ok": True})
        if (method, path) == ("DELETE", "/_fake/outage"):
            state.outage = None
            return Response(200, {"ok": True})
        if method == "GET" and path in ("/_fake/events", "/_fake/meter_events", "/_fake/requests", "/_fake/deliveries"):
            name = path.rsplit("/", 1)[1]
            return Response(200, getattr(state, name))
        if (method, path) == ("GET", "/_fake/meter_attempts"):
            return Response(200, state.meter_attempts)
        if (method, path) == ("GET", "/_fake/held"):
            return Response(200, state.held)
        if method == "GET" and len(parts) == 2 and parts[0] == "subscriptions":
            sub = state.subscriptions.get(parts[1])
            return Response(200, state.subscription_object(sub)) if sub else Response(404, {"error": "no such"})
        if (method, path) == ("GET", "/_fake/checkout_sessions"):
            return Response(200, [self._public(s) for s in state.checkout_sessions.values()])
        if method == "POST" and len(parts) == 3 and parts[0] == "checkout" and parts[2] == "complete":
            return await self._complete_checkout(parts[1], body)
        if method == "POST" and len(parts) == 3 and parts[0] == "subscriptions" and parts[2] == "status":
            return await self._set_status(parts[1], body)
        if (method, path) == ("POST", "/_fake/deliver"):
            return await self._deliver(body)
        return Response(404, {"error": f"no control route {method} {path}"})

    async def _complete_checkout(self, session_id: str, body: dict[str, Any]) -> Response:
        state = self.state
        session = state.checkout_sessions.get(session_id)
        if session is None or session["status"] != "open":
            return Response(404, {"error": "no open checkout session"})
        sub = self.state.create_subscription(session, body.get("trial_days"), body.get("status"))
        session.update(status="complete", payment_status="paid", subscription=sub["id"])
        events = [state.event("checkout.session.completed", self._public(session) or {})]
        events.append(state.event("customer.subscription.created", state.subscription_object(sub)))
        if sub["status"] == "active":
            events.append(state.event("invoice.paid", state.invoice_object(state.create_invoice(sub, "paid"))))
        deliveries = await self.emit(events)
        return Response(200, {"subscription": sub["id"], "events": [e["id"] for e in events], "deliveries": deliveries})

    async def _set_status(self, subscription_id: str, body: dict[str, Any]) -> Response:
        state = self.state
        sub = state.subscriptions.get(subscription_id)
        if sub is None:
            return Response(404, {"error": "no such subscription"})
        previous = state.subscription_object(sub)
        status = body["status"]
        events = []
        invoice = body.get("invoice")  # failed | paid | None
        if invoice == "failed":
            attempts = int(body.get("attempt_count", 1))
            failed = state.create_invoice(sub, "open", attempt_count=attempts)
            events.append(state.event("invoice.payment_failed", state.invoice_object(failed)))
        sub["status"] = status
        if status == "canceled":
            sub.update(canceled_at=state.now(), ended_at=state.now())
        if body.get("cancel_at_period_end") is not None:
            sub["cancel_at_period_end"] = bool(body["cancel_at_period_end"])
        if body.get("renew"):
            for item in sub["items"]["data"]:
                item["current_period_start"] = item["current_period_end"]
                item["current_period_end"] = item["current_period_end"] + MONTH
        kind = "customer.subscription.deleted" if status == "canceled" else "customer.subscription.updated"
        changed = {k: previous[k] for k in ("status", "cancel_at_period_end") if previous.get(k) != sub.get(k)}
        if invoice == "failed":
            events.insert(0, state.event(kind, state.subscription_object(sub), changed))
        else:
            events.append(state.event(kind, state.subscription_object(sub), changed))
        if invoice == "paid":
            paid = state.create_invoice(sub, "paid")
            events.append(state.event("invoice.paid", state.invoice_object(paid)))
        deliveries = await self.emit(events)
        return Response(200, {"events": [e["id"] for e in events], "deliveries": deliveries})

    async def _deliver(self, body: dict[str, Any]) -> Response:
        state = self.state
        ids = body.get("event_ids")
        if ids is None:
            ids = list(state.held)
        by_id = {e["id"]: e for e in state.events}
        missing = [i for i in ids if i not in by_id]
        if missing:
            return Response(404, {"error": f"no such events: {missing}"})
        if body.get("order") == "reverse":
            ids = list(reversed(ids))
        outcomes = []
        for _ in range(int(body.get("times", 1))):
            for event_id in ids:
                outcomes.append(
                    await self.deliver_one(
                        by_id[event_id], signature=body.get("signature", "valid"), secret=body.get("secret")
                    )
                )
        state.held = [i for i in state.held if i not in ids]
        return Response(200, outcomes)


# --------------------------------------------------------------------------- runner
class _ReadyServer(uvicorn.Server):
    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            print(f"READY {socket_url(sockets[0])}", flush=True)


def serve(host: str, port: int, api_key: str) -> None:
    sock = bind_socket(host, port)
    app = FakeStripeApp(api_key)
    app.base_url = socket_url(sock)
    make_server(app, _ReadyServer).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Stripe API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.api_key)


# --------------------------------------------------------------------------- pytest helper
class FakeStripe:
    """Runs :mod:`tests.fakes.stripe_api` as a subprocess and drives its control API."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, host: str = "127.0.0.1", startup_timeout: float = 15.0) -> None:
        self.api_key = api_key
        self._host = host
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self._client: httpx.Client | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeStripe is not started")
        return self._base_url

    def billing_settings(self, webhook_secret: str, base_price: str, texts_price: str) -> dict[str, str]:
        """What our processes need to bill against this fake (BILLING_* and STRIPE_* settings)."""
        return {
            "BILLING_ENABLED": "true",
            "BILLING_GRACE_DAYS": "7",
            "STRIPE_SECRET_KEY": self.api_key,
            "STRIPE_API_BASE_URL": self.base_url,
            "STRIPE_WEBHOOK_SECRET": webhook_secret,
            "STRIPE_PRICE_BASE": base_price,
            "STRIPE_PRICE_TEXTS": texts_price,
            "BILLING_SUCCESS_URL": "https://app.example.com/billing/done",
            "BILLING_CANCEL_URL": "https://app.example.com/billing",
            "BILLING_PORTAL_RETURN_URL": "https://app.example.com/billing",
        }

    def start(self) -> Self:
        if self._process is not None:
            return self
        from tests.fakes.twilio_api import _read_ready_line

        path = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.stripe_api",
                "--host",
                self._host,
                "--port",
                "0",
                "--api-key",
                self.api_key,
            ],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": path},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self._base_url = _read_ready_line(self._process, self._startup_timeout)
        except RuntimeError:
            self.stop()
            raise
        self._client = httpx.Client(base_url=self._base_url, timeout=60.0, trust_env=False)
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            if self._process.stdout is not None:
                self._process.stdout.close()
        self._process = self._client = self._base_url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, method: str, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        if self._client is None:
            raise RuntimeError("FakeStripe is not started")
        response = self._client.request(method, path, json=dict(payload) if payload is not None else None)
        response.raise_for_status()
        return response.json()

    # -- control
    def reset(self) -> None:
        self._call("POST", "/_fake/reset")

    def configure(self, **config: Any) -> None:
        """``webhook_url``, ``webhook_secret``, ``delivery`` (auto|hold), ``meter_duplicates`` (error|accept),
        ``legacy_shapes``, ``clock_offset`` (seconds added to Stripe's clock)."""
        self._call("POST", "/_fake/config", config)

    def outage(self, **outage: Any) -> None:
        """E.g. ``outage(status=503)``, ``outage(status=429, count=2)``, ``outage(status=500, after=30,
        paths=["/v1/billing/meter_events"], drop_after_create=True)``."""
        self._call("POST", "/_fake/outage", outage)

    def heal(self) -> None:
        self._call("DELETE", "/_fake/outage")

    def complete_checkout(self, session_id: str, **options: Any) -> dict[str, Any]:
        """The customer pays: a subscription (``trial_days``, ``status``), its first invoice, their events."""
        return dict(self._call("POST", f"/_fake/checkout/{session_id}/complete", options))

    def set_subscription_status(self, subscription_id: str, status: str, **options: Any) -> dict[str, Any]:
        """``invoice="failed"|"paid"`` adds an invoice event; ``renew=True`` moves the period on."""
        return dict(self._call("POST", f"/_fake/subscriptions/{subscription_id}/status", {"status": status, **options}))

    def deliver(
        self,
        event_ids: Sequence[str] | None = None,
        *,
        order: str = "as_given",
        times: int = 1,
        signature: str = "valid",
        secret: str | None = None,
    ) -> list[dict[str, Any]]:
        """Deliver events (default: every held one) now; ``signature`` valid|bad|stale|missing."""
        payload: dict[str, Any] = {"order": order, "times": times, "signature": signature}
        if event_ids is not None:
            payload["event_ids"] = list(event_ids)
        if secret is not None:
            payload["secret"] = secret
        return list(self._call("POST", "/_fake/deliver", payload))

    def events(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/events"))

    def held(self) -> list[str]:
        return list(self._call("GET", "/_fake/held"))

    def meter_events(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/meter_events"))

    def meter_attempts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/meter_attempts"))

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/requests"))

    def deliveries(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/deliveries"))

    def checkout_sessions(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_fake/checkout_sessions"))

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/_fake/subscriptions/{subscription_id}"))


if __name__ == "__main__":
    main()

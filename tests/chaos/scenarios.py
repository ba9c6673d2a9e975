"""The fault suite's scenarios (issue #10). Each drives the real processes, injects its fault, and
returns one `Row` with exact counts.

Load is the first-SMS benchmark's open-loop generator (`tests.bench.first_sms.drive`: one signed
dial-status webhook per call, its own caller number each) at `Config.rate` calls per second.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import aiohttp
import httpx

from nmc.telephony import dial_outcome_params, new_call_sid, signed_headers
from tests.bench.first_sms import PATH, TENANT_NUMBER, Scenario, caller_number, drive
from tests.chaos.accounting import Row, Window, tally, texts_by_caller
from tests.chaos.environment import ChaosEnv
from tests.conftest import TWILIO_TOKEN

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"


@dataclass(frozen=True)
class Config:
    """How big each scenario is: the full suite, or `--short`."""

    short: bool = False
    rate: float = 30.0  # calls per second under the faults
    duplicate_calls: int = 25
    deliveries: int = 200
    forged_rounds: int = 4
    kills: int = 5
    first_kill_at: float = 5.0
    kill_every: float = 10.0
    # During the kills Twilio answers in this long, and a request whose worker died meanwhile never
    # reached it: the dead worker holds claimed texts that only a reclaim can send.
    twilio_latency: float = 0.5
    pg_seconds: float = 30.0
    pg_restart_at: float = 10.0
    fault_at: float = 5.0
    fault_seconds: float = 10.0
    fault_run_seconds: float = 25.0
    backlog: int = 1000
    backlog_rate: float = 100.0
    drain_rate: float = 10.0
    drain_traffic_seconds: float = 20.0
    settle_seconds: float = 60.0

    @property
    def kill_run_seconds(self) -> float:
        return self.first_kill_at + self.kills * self.kill_every


FULL = Config()
SHORT = Config(
    short=True,
    duplicate_calls=3,
    forged_rounds=1,
    kills=1,
    first_kill_at=3.0,
    kill_every=5.0,
    pg_seconds=14.0,  # the web must be seen taking webhooks again within 10 s of the restart
    pg_restart_at=2.0,
    fault_at=1.0,
    fault_seconds=3.0,
    fault_run_seconds=5.0,
    backlog=100,
    drain_traffic_seconds=5.0,
    settle_seconds=15.0,  # a text still waiting by then is more than 10 s late anyway
)


async def at(moment: float) -> None:
    """Sleep until `moment` (time.monotonic())."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def load(env: ChaosEnv, name: str, rate: float, seconds: float, run: int) -> tuple[dict[str, float], int]:
    """The benchmark's open-loop load: (send time per caller, webhooks answered non-2xx or not at all)."""
    sent_at, _total, _achieved, errors = await drive(env.stack, Scenario(name, rate, seconds), run)
    return sent_at, errors


# ------------------------------------------------------------------------ 1. duplicates x200


async def duplicates(env: ChaosEnv, config: Config, run: int) -> Row:
    """Each call's signed dial-status webhook delivered `deliveries` times, all at once: half of them
    with one shared I-Twilio-Idempotency-Token (Twilio's own retries), a quarter with tokens of their
    own, a quarter with none; every delivery of every call in one shuffled burst."""
    row = Row(f"duplicates x{config.deliveries}")
    url = f"{env.base_url}{PATH}"
    deliveries = []
    for index in range(config.duplicate_calls):
        caller = caller_number(run, index)
        params = dial_outcome_params(new_call_sid(), caller, TENANT_NUMBER)
        body = urlencode(params).encode()
        headers = {**signed_headers(url, params, TWILIO_TOKEN), **FORM}
        shared = f"chaos-{uuid4().hex}"
        for copy in range(config.deliveries):
            token = shared if copy < config.deliveries // 2 else f"chaos-{uuid4().hex}"
            extra = {IDEMPOTENCY_HEADER: token} if copy < 3 * config.deliveries // 4 else {}
            deliveries.append((caller, body, {**headers, **extra}))
    random.shuffle(deliveries)
    dedupe_before = env.metric("webhook_dedupe_hits_total", 'provider="twilio"')
    answers: dict[str, list[tuple[int, str]]] = defaultdict(list)
    sent_at: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def deliver(caller: str, body: bytes, headers: dict[str, str]) -> None:
            sent_at.setdefault(caller, time.time())
            try:
                async with client.post(url, data=body, headers=headers) as response:
                    answers[caller].append((response.status, await response.text()))
            except (aiohttp.ClientError, TimeoutError) as exc:
                answers[caller].append((0, type(exc).__name__))

        await asyncio.gather(*(deliver(*delivery) for delivery in deliveries))
    statuses = Counter(status for replies in answers.values() for status, _ in replies)
    if set(statuses) != {200}:
        row.failures.append("answers " + ", ".join(f"{n}x {s or 'no answer'}" for s, n in sorted(statuses.items())))
    differing = [caller for caller, replies in answers.items() if len({text for _, text in replies}) > 1]
    if differing:
        row.failures.append(f"{len(differing)} calls got different answers to their duplicates")
    errors = sum(1 for replies in answers.values() if all(status != 200 for status, _ in replies))
    await tally(env, row, sent_at, webhook_errors=errors, settle_seconds=config.settle_seconds)
    async with env.db() as db:
        ledger = await db.fetchval(
            "SELECT count(*) FROM webhook_events WHERE kind = 'voice.dial-status' AND payload->>'From' = ANY($1)",
            list(sent_at),
        )
    if ledger != len(sent_at):
        row.failures.append(f"{ledger} webhook_events rows for {len(sent_at)} calls")
    hits = env.metric("webhook_dedupe_hits_total", 'provider="twilio"') - dedupe_before
    row.notes.append(f"{len(deliveries)} deliveries, all {'/'.join(map(str, sorted(statuses)))}")
    row.notes.append(f"dedupe hits +{hits:g}")
    return row


# ------------------------------------------------------------------------ 2. forged signatures


def webhook_routes() -> list[str]:
    """Every POST route under /webhooks/ the web serves (read from the app's controllers, so a route
    added later is covered without touching this suite)."""
    from litestar import Controller
    from litestar.handlers import HTTPRouteHandler

    from nmc.app import WEBHOOK_CONTROLLERS

    routes = set()
    for item in WEBHOOK_CONTROLLERS:
        if isinstance(item, type) and issubclass(item, Controller):
            prefix, handlers = item.path, [getattr(item, name) for name in dir(item)]
        else:
            prefix, handlers = "", [item]
        for handler in handlers:
            if isinstance(handler, HTTPRouteHandler) and "POST" in handler.http_methods:
                for path in handler.paths:
                    route = f"{prefix.rstrip('/')}/{path.lstrip('/')}".rstrip("/")
                    if route.startswith("/webhooks/"):
                        routes.add(route)
    return sorted(routes)


def provider_of(route: str) -> str:
    return route.split("/")[2]


def route_params(route: str, caller: str) -> dict[str, str]:
    """A plausible Twilio body for each Twilio webhook route, from a caller of its own."""
    call = {"CallSid": new_call_sid(), "From": caller, "To": TENANT_NUMBER, "Direction": "inbound"}
    message_sid = "SM" + secrets.token_hex(16)
    known = {
        "/webhooks/twilio/voice": {**call, "CallStatus": "ringing"},
        "/webhooks/twilio/voice/dial-status": dial_outcome_params(call["CallSid"], caller, TENANT_NUMBER),
        "/webhooks/twilio/voice/status": {**call, "CallStatus": "no-answer", "CallDuration": "0"},
        "/webhooks/twilio/sms": {"MessageSid": message_sid, "From": caller, "To": TENANT_NUMBER, "Body": "hi"},
        "/webhooks/twilio/sms/status": {"MessageSid": message_sid, "MessageStatus": "delivered", "To": caller},
    }
    return known.get(route, {**call, "MessageSid": message_sid, "Body": "hi"})


def twilio_forgeries(base_url: str, route: str, params: dict[str, str]) -> list[tuple[str, dict[str, str], bytes]]:
    """(how it is forged, headers, body): every way a request can carry a signature that is not ours."""
    url = f"{base_url}{route}"
    body = urlencode(params).encode()
    other_route = "/webhooks/twilio/voice" if route != "/webhooks/twilio/voice" else "/webhooks/twilio/sms"
    tampered = urlencode({**params, "To": "+15550009999"}).encode()
    signature = signed_headers(url, params, TWILIO_TOKEN)
    wrong_route = signed_headers(f"{base_url}{other_route}", params, TWILIO_TOKEN)
    return [
        ("no signature", dict(FORM), body),
        ("empty signature", {**FORM, "X-Twilio-Signature": ""}, body),
        ("garbage", {**FORM, "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}, body),
        ("another auth token", {**FORM, **signed_headers(url, params, "not-our-auth-token")}, body),
        ("signed for another route", {**FORM, **wrong_route}, body),
        ("body changed after signing", {**FORM, **signature}, tampered),
    ]


# Other providers' routes: no signature at all, or made-up values in every signature header we know.
GARBAGE_SIGNATURES = {
    "Stripe-Signature": "t=1700000000,v1=" + "0" * 64,
    "svix-id": "msg_chaos",
    "svix-timestamp": "1700000000",
    "svix-signature": "v1,bm90IGEgc2lnbmF0dXJl",
    "X-Goog-Channel-ID": "chaos-channel",
    "X-Goog-Channel-Token": "not-the-token",
    "X-Goog-Resource-State": "exists",
    "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl",
}


def other_forgeries() -> list[tuple[str, dict[str, str], bytes]]:
    body = b'{"id": "evt_chaos", "type": "chaos.forged", "data": {}}'
    json_form = {"Content-Type": "application/json"}
    return [("no signature", json_form, body), ("made-up signature", {**json_form, **GARBAGE_SIGNATURES}, body)]


async def forged_signatures(env: ChaosEnv, config: Config, run: int) -> Row:
    """Every /webhooks route, every forgery: refused (Twilio: 403), nothing stored, no text, and
    webhook_signature_failures_total{provider} grows by exactly the number sent. Then one correctly
    signed request per Twilio route is accepted (so the 403s were the signatures' doing)."""
    row = Row("forged signatures, every route", recovery_limit=None)
    routes = webhook_routes()
    requests: list[tuple[str, str, str, dict[str, str], bytes]] = []
    index = 0
    for _round in range(config.forged_rounds):
        for route in routes:
            caller = caller_number(run, index)
            index += 1
            if provider_of(route) == "twilio":
                forged = twilio_forgeries(env.base_url, route, route_params(route, caller))
            else:
                forged = other_forgeries()
            requests += [(route, how, caller, headers, body) for how, headers, body in forged]
    providers = sorted({provider_of(route) for route in routes})
    rows_before = await env.count_rows()
    counted_before = {p: env.metric("webhook_signature_failures_total", f'provider="{p}"') for p in providers}
    async with httpx.AsyncClient(base_url=env.base_url, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(route, content=body, headers=headers) for route, _, _, headers, body in requests)
        )
        await asyncio.sleep(2)  # a text would have gone out by now
        rows_after = await env.count_rows()
        counted = {
            p: env.metric("webhook_signature_failures_total", f'provider="{p}"') - counted_before[p] for p in providers
        }
        texts = texts_by_caller(env.fake.messages(), {caller for _, _, caller, _, _ in requests})
        controls = {}
        for route in (r for r in routes if provider_of(r) == "twilio"):
            params = route_params(route, caller_number(run, 9_000_000 + len(controls)))
            headers = {**FORM, **signed_headers(f"{env.base_url}{route}", params, TWILIO_TOKEN)}
            answer = await client.post(route, content=urlencode(params).encode(), headers=headers)
            controls[route] = answer.status_code
    answers: dict[str, Counter[int]] = defaultdict(Counter)
    wrong = []
    for (route, how, *_), response in zip(requests, responses, strict=True):
        answers[provider_of(route)][response.status_code] += 1
        refused = response.status_code == 403 if provider_of(route) == "twilio" else 400 <= response.status_code < 500
        if not refused:
            wrong.append(f"{route} ({how}): {response.status_code}")
    if wrong:
        row.failures.append(f"{len(wrong)} not refused as they should be, e.g. {wrong[0]}")
    changed = {t: rows_after[t] - rows_before[t] for t in rows_before if rows_after[t] != rows_before[t]}
    if changed:
        row.failures.append("rows stored: " + ", ".join(f"{table} +{n}" for table, n in changed.items()))
    if texts:
        row.failures.append(f"{sum(map(len, texts.values()))} texts sent to forged callers")
    sent = Counter(provider_of(route) for route, *_ in requests)
    if miscounted := {p: f"+{counted[p]:g} for {sent[p]}" for p in providers if counted[p] != sent[p]}:
        row.failures.append(f"webhook_signature_failures_total: {miscounted}")
    if rejected := {route: status for route, status in controls.items() if status != 200}:
        row.failures.append(f"correctly signed requests refused: {rejected}")
    row.not_accepted = sum(1 for response in responses if response.status_code >= 400)
    row.notes.append(f"{len(requests)} forged requests to {len(routes)} routes")
    row.notes += [
        f"{p}: "
        + ", ".join(f"{n}x {status}" for status, n in sorted(answers[p].items()))
        + f", counted +{counted[p]:g}"
        for p in providers
    ]
    row.notes.append(f"rows stored: {sum(changed.values())}")
    return row


# ------------------------------------------------------------------------ 3. worker SIGKILL


async def worker_sigkill(env: ChaosEnv, config: Config, run: int) -> Row:
    """kill -9 a worker `kills` times during a run at `rate` calls/s (the workers in turn), starting it
    again as `nmc worker` at once. Twilio answers in `twilio_latency` s, so texts are in flight when a
    worker dies; its requests still on the way are dropped (they never reached Twilio)."""
    kills = config.kills
    row = Row(f"worker SIGKILL x{kills} at {config.rate:g} calls/s")
    windows: list[Window] = []
    restarts: list[float] = []
    env.fake.outage(delay=config.twilio_latency, drop_if_client_leaves=True)
    started = time.monotonic()

    async def killer() -> None:
        for number in range(kills):
            await at(started + config.first_kill_at + number * config.kill_every)
            slot = number % len(env.workers)
            killed_at = time.time()
            await asyncio.to_thread(env.kill_worker, slot)
            windows.append(Window(f"kill {number + 1}", killed_at, killed_at))
            restarts.append(await asyncio.to_thread(env.start_worker, slot))

    (sent_at, errors), _ = await asyncio.gather(
        load(env, row.scenario, config.rate, config.kill_run_seconds, run), killer()
    )
    env.fake.heal()
    await tally(env, row, sent_at, webhook_errors=errors, windows=windows, settle_seconds=config.settle_seconds)
    row.notes.append(f"{len(env.workers)} workers, Twilio answering in {config.twilio_latency:g} s")
    row.notes.append("restart took " + ", ".join(f"{s:.1f}" for s in restarts) + " s")
    return row


# ------------------------------------------------------------------------ 4. Postgres restart


async def postgres_restart(env: ChaosEnv, config: Config, run: int) -> Row:
    """`pg_ctl restart -m fast` of the (private) cluster during a run at `rate` calls/s."""
    row = Row(f"Postgres restart at {config.rate:g} calls/s")
    windows: list[Window] = []
    started = time.monotonic()

    async def restart() -> None:
        await at(started + config.pg_restart_at)
        began = time.time()
        await asyncio.to_thread(env.postgres.restart)
        windows.append(Window("restart", began, time.time()))

    (sent_at, errors), _ = await asyncio.gather(load(env, row.scenario, config.rate, config.pg_seconds, run), restart())
    await tally(
        env,
        row,
        sent_at,
        webhook_errors=errors,
        windows=windows,
        settle_seconds=config.settle_seconds,
        may_refuse=windows[0],
    )
    row.notes.append(f"server down {windows[0].end - windows[0].start:.1f} s")
    return row


# ------------------------------------------------------------------------ 5. Twilio faults


TWILIO_FAULTS: dict[str, dict[str, Any]] = {
    "twilio-500": {"status": 500, "code": 20500},
    # No answer until the client times out: nothing created; or (-created) the text is created but
    # the answer never comes, the worst case for exactly-once: only a look-up in the Messages list
    # tells the retry that it went out.
    "twilio-hang": {"status": 504, "delay": 60},
    "twilio-hang-created": {"status": 504, "delay": 60, "drop_after_create": True},
    "twilio-429": {"status": 429, "code": 20429, "retry_after": 2},
    "twilio-401": {"status": 401, "code": 20003},
    "twilio-403": {"status": 403, "code": 20005, "message": "Account not active"},
}
FAULT_LABELS = {
    "twilio-500": "Twilio 500",
    "twilio-hang": "Twilio hang",
    "twilio-hang-created": "Twilio hang after creating the text",
    "twilio-429": "Twilio 429, Retry-After: 2",
    "twilio-401": "Twilio 401",
    "twilio-403": "Twilio 403",
}


def twilio_fault(name: str) -> Callable[[ChaosEnv, Config, int], Awaitable[Row]]:
    async def scenario(env: ChaosEnv, config: Config, run: int) -> Row:
        """Every Messages API request (create and list) answered with the fault for `fault_seconds`
        during a run at `rate` calls/s, then healed."""
        row = Row(f"{FAULT_LABELS[name]} for {config.fault_seconds:g} s")
        windows: list[Window] = []
        started = time.monotonic()

        async def fault() -> None:
            await at(started + config.fault_at)
            began = time.time()
            await asyncio.to_thread(env.fake.outage, **TWILIO_FAULTS[name])
            await at(started + config.fault_at + config.fault_seconds)
            await asyncio.to_thread(env.fake.heal)
            windows.append(Window(name, began, time.time()))

        (sent_at, errors), _ = await asyncio.gather(
            load(env, row.scenario, config.rate, config.fault_run_seconds, run), fault()
        )
        await tally(env, row, sent_at, webhook_errors=errors, windows=windows, settle_seconds=config.settle_seconds)
        hit = sum(1 for record in env.fake.messages() if (record["script"] or {}).get("outage"))
        row.notes.append(f"{hit} send requests hit the fault")
        return row

    scenario.__name__ = name.replace("-", "_")
    return scenario


# ------------------------------------------------------------------------ 6. start-up backlog


async def backlog(env: ChaosEnv, config: Config, run: int) -> Row:
    """`backlog` missed calls accepted with every worker stopped; then the workers start while
    `drain_rate` calls/s keep coming. Recovery is the drain: from the workers consuming (the
    process's own start-up, shown in the notes, is not the drain) to the last backlog text."""
    row = Row(f"{config.backlog:,}-call start-up backlog")
    await asyncio.to_thread(env.stop_workers)
    stopped_at = time.time()
    marks = env.log_marks()
    queued_at, queued_errors = await load(
        env, "backlog", config.backlog_rate, config.backlog / config.backlog_rate, run
    )
    pending_before = len(texts_by_caller(env.fake.messages(), queued_at))
    windows: list[Window] = []

    async def start() -> None:
        began = time.time()
        if crashes := await asyncio.to_thread(env.start_workers):
            row.failures.append(f"{len(crashes)} worker starts crashed, e.g. {crashes[0]}")
        consuming = time.time()
        windows.append(Window("workers stopped", stopped_at, consuming))
        row.notes.append(f"`nmc worker` consuming {consuming - began:.1f} s after its start")

    (meanwhile_at, meanwhile_errors), _ = await asyncio.gather(
        load(env, "meanwhile", config.drain_rate, config.drain_traffic_seconds, run + 1), start()
    )
    errors = queued_errors + meanwhile_errors
    await tally(
        env,
        row,
        {**queued_at, **meanwhile_at},
        webhook_errors=errors,
        windows=windows,
        settle_seconds=config.settle_seconds,
        recovery_of=set(queued_at),
    )
    if pending_before:
        row.failures.append(f"{pending_before} texts went out with no worker running")
    if errors:
        row.failures.append(f"web answered {queued_errors} + {meanwhile_errors} webhooks non-2xx (queued + meanwhile)")
    if too_many := env.grep_since(marks, "too many clients|TooManyConnections"):
        row.failures.append(f"'too many clients' x{len(too_many)}, e.g. {too_many[0][:160]}")
    row.notes.insert(0, f"+{len(meanwhile_at)} calls at {config.drain_rate:g}/s during the drain")
    return row


# ------------------------------------------------------------------------ registry

ScenarioFn = Callable[[ChaosEnv, Config, int], Awaitable[Row]]
# In the order they run: the Twilio refusals that open the sending circuit, then the Postgres restart,
# last, so what they leave behind (an open circuit; pooled connections the restart broke) cannot
# colour another scenario's row.
SCENARIOS: dict[str, ScenarioFn] = {
    "duplicates": duplicates,
    "forged-signatures": forged_signatures,
    "backlog": backlog,
    "worker-sigkill": worker_sigkill,
    **{name: twilio_fault(name) for name in TWILIO_FAULTS},
    "postgres-restart": postgres_restart,
}
# Each scenario's own block of caller numbers (tests.bench.first_sms.caller_number).
RUN_NUMBERS = {name: 300 + 10 * position for position, name in enumerate(SCENARIOS)}


def run_scenario(env: ChaosEnv, name: str, config: Config) -> Row:
    """One scenario from a quiet system (no earlier scenario's text still waiting, as far as waiting
    `settle_seconds` allows) on a reset fake Twilio. A process that died meanwhile, or the scenario
    itself crashing, fails the row; dead workers are started again for the next scenario."""
    leftover = asyncio.run(env.quiesce(config.settle_seconds))
    env.fake.reset()
    try:
        row = asyncio.run(SCENARIOS[name](env, config, RUN_NUMBERS[name]))
    except Exception as exc:
        row = Row(name, failures=[f"the scenario crashed: {type(exc).__name__}: {str(exc)[:300]}"])
    if leftover:
        row.notes.append(f"started with {leftover} texts of earlier scenarios still waiting")
    if dead := env.dead_processes():
        row.failures.append("; ".join(dead))
    env.revive()
    return row

"""Counting a scenario's texts exactly, and how long the system took to recover from its faults.

Every call has its own caller number (as in the first-SMS benchmark), so the fake Twilio's record of
Messages requests says exactly which calls got no text and which got more than one. A call is
*expected* to be texted when the web committed it as missed (`conv_calls`); a call whose webhook
got a non-2xx and left nothing behind was *not accepted* (Twilio does not retry voice callbacks: that
caller is not texted, which is the product's contract, not a lost text).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.environment import ChaosEnv

RECOVERY_LIMIT_SECONDS = 10.0
GRACE_SECONDS = 1.5  # after the last expected text: a late duplicate still shows up
QUIET_SECONDS = 3.0  # nothing pending and nothing new this long: whatever is missing is lost


@dataclass(frozen=True)
class Window:
    """A fault, from when it started to when it ended (Unix seconds; a kill is an instant)."""

    label: str
    start: float
    end: float


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    expected: int = 0
    once: int = 0
    lost: int = 0
    duplicated: int = 0  # texts beyond the first to one caller
    not_accepted: int = 0  # webhooks answered non-2xx (or not at all) that stored nothing
    recovery: float | None = None  # None: no fault window
    recovery_at_least: bool = False  # texts were still waiting when we stopped: the recovery is longer
    recovery_limit: float | None = RECOVERY_LIMIT_SECONDS
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def recovered_in_time(self) -> bool:
        return self.recovery is None or self.recovery_limit is None or self.recovery <= self.recovery_limit

    @property
    def passed(self) -> bool:
        return not self.failures and self.lost == 0 and self.duplicated == 0 and self.recovered_in_time

    def verdict(self) -> str:
        reasons = []
        if self.lost:
            reasons.append(f"{self.lost} lost")
        if self.duplicated:
            reasons.append(f"{self.duplicated} duplicated")
        if not self.recovered_in_time:
            reasons.append(f"recovery > {self.recovery_limit:g} s")
        reasons += self.failures
        return "pass" if not reasons else "FAIL: " + "; ".join(reasons)

    def cells(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "texts expected": self.expected,
            "sent once": self.once,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "not accepted": self.not_accepted,
            "recovery s": "—" if self.recovery is None else f"{'>' * self.recovery_at_least}{self.recovery:.1f}",
            "result": _cell(self.verdict()),
            "notes": _cell("; ".join(self.notes)),
        }


def _cell(text: str) -> str:
    """One Markdown table cell: no line breaks, no column separators."""
    return " ".join(text.split()).replace("|", "\\|")


def texts_by_caller(records: list[dict[str, Any]], callers: set[str] | dict[str, float]) -> dict[str, list[float]]:
    """Texts Twilio created (a sid), per caller, by arrival time at the fake."""
    texts: dict[str, list[float]] = defaultdict(list)
    for record in records:
        to = record["form"].get("To")
        if record["sid"] and to in callers:
            texts[to].append(record["received_at"])
    return {caller: sorted(times) for caller, times in texts.items()}


async def stored_callers(env: ChaosEnv, callers: list[str]) -> set[str]:
    async with env.db() as db:
        rows = await db.fetch("SELECT caller FROM conv_calls WHERE status = 'missed' AND caller = ANY($1)", callers)
    return {row["caller"] for row in rows}


async def waiting_first_sms(env: ChaosEnv, callers: list[str]) -> dict[str, float]:
    """Callers whose call.missed row is not dispatched yet, and in how many seconds it is due."""
    async with env.db() as db:
        rows = await db.fetch(
            "SELECT payload::jsonb->>'caller' AS caller, extract(epoch FROM available_at - now()) AS due_in"
            " FROM outbox_events WHERE event_name = 'call.missed' AND dispatched_at IS NULL"
            " AND payload::jsonb->>'caller' = ANY($1)",
            callers,
        )
    return {row["caller"]: float(row["due_in"]) for row in rows}


async def parked_errors(env: ChaosEnv, callers: list[str]) -> dict[str, int]:
    """Why call.missed rows of these callers were parked in outbox_events_errors."""
    async with env.db() as db:
        rows = await db.fetch(
            "SELECT left(coalesce(last_error, ''), 70) AS error, count(*) AS n FROM outbox_events_errors"
            " WHERE event_name = 'call.missed' AND payload::jsonb->>'caller' = ANY($1) GROUP BY 1 ORDER BY 2 DESC",
            callers,
        )
    return {row["error"]: row["n"] for row in rows}


async def settle(env: ChaosEnv, callers: list[str], deadline: float) -> None:
    """Wait until every stored call is texted and none of theirs waits in the outbox; or until nothing
    waits and nothing changes for QUIET_SECONDS (what is missing then is lost); or the deadline
    (time.monotonic())."""
    quiet_since: float | None = None
    last: tuple[int, int] | None = None
    wanted = set(callers)
    while time.monotonic() < deadline:
        stored = await stored_callers(env, callers)
        texted = set(texts_by_caller(env.fake.messages(), wanted))
        waiting = len(await waiting_first_sms(env, callers))
        if stored <= texted and not waiting:
            return
        state = (len(texted), waiting)
        if not waiting and state == last:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= QUIET_SECONDS:
                return
        else:
            quiet_since = None
        last = state
        await asyncio.sleep(0.5)


async def tally(
    env: ChaosEnv,
    row: Row,
    sent_at: dict[str, float],
    *,
    webhook_errors: int,
    windows: list[Window] | None = None,
    settle_seconds: float,
    recovery_of: set[str] | None = None,
    may_refuse: Window | None = None,
) -> Row:
    """Fill `row` with the scenario's exact counts.

    `recovery_of`: the callers whose texts the recovery is measured on (default: every call not yet
    texted when a window began). `may_refuse`: the database outage during which (and up to
    RECOVERY_LIMIT_SECONDS after which) the web may refuse webhooks; any other refusal fails the row.
    A text still waiting in the outbox when we stop waiting is not counted lost: it fails the row as
    late, and the recovery is shown as at least the time waited.
    """
    callers = list(sent_at)
    await settle(env, callers, time.monotonic() + settle_seconds)
    await asyncio.sleep(GRACE_SECONDS)
    stored = await stored_callers(env, callers)
    texts = texts_by_caller(env.fake.messages(), sent_at)
    gave_up = time.time()
    row.expected = len(stored)
    row.once = sum(1 for caller in stored if len(texts.get(caller, [])) == 1)
    untexted = [caller for caller in stored if caller not in texts]
    waiting = await waiting_first_sms(env, untexted) if untexted else {}
    row.lost = len(untexted) - len(waiting)
    if waiting:
        row.failures.append(
            f"{len(waiting)} texts still waiting in the outbox (next attempt in {min(waiting.values()):.0f} s)"
        )
    row.duplicated = sum(len(times) - 1 for times in texts.values())
    if unexpected := [caller for caller in texts if caller not in stored]:
        row.failures.append(f"{len(unexpected)} callers texted whose call was never stored")
    # A 2xx for a call that left nothing behind is a text lost at the web; the other unstored calls
    # got a non-2xx (or no answer): not accepted.
    lost_at_web = max(0, len(sent_at) - webhook_errors - len(stored))
    row.not_accepted = len(sent_at) - len(stored) - lost_at_web
    if lost_at_web:  # Twilio was told we had them: they were promised a text
        row.expected += lost_at_web
        row.lost += lost_at_web
        row.notes.append(f"{lost_at_web} webhooks answered 2xx but stored nothing")
    if webhook_errors:
        row.notes.append(f"{webhook_errors} webhooks answered non-2xx or timed out")
    refused = [sent_at[caller] for caller in sent_at if caller not in stored]
    if may_refuse is not None and refused:
        row.notes.append(f"web refused webhooks until +{max(refused) - may_refuse.end:.1f} s after the outage")
        limit = may_refuse.end + RECOVERY_LIMIT_SECONDS
        refused = [moment for moment in refused if not may_refuse.start - 1 <= moment <= limit]
    if refused:
        outside = "later than 10 s after the outage" if may_refuse else "with the database up"
        row.failures.append(f"web refused {len(refused)} webhooks {outside}")
    lost = [caller for caller in untexted if caller not in waiting]
    if lost and (parked := await parked_errors(env, lost)):
        row.notes.append("parked: " + ", ".join(f"{n}x {error}" for error, n in parked.items()))
    if windows:
        first_text = {caller: times[0] for caller, times in texts.items() if caller in stored}
        first_text |= dict.fromkeys(waiting, gave_up)  # at least: they have not gone out yet
        recoveries = [recovery(window, sent_at, first_text, recovery_of) for window in windows]
        row.recovery = max(seconds for seconds, _ in recoveries)
        row.recovery_at_least = bool(waiting)
        if len(windows) > 1:
            row.notes.append("per fault: " + ", ".join(f"{seconds:.1f} s" for seconds, _ in recoveries))
        row.notes.append("texts held up: " + ", ".join(str(held) for _, held in recoveries))
    return row


def recovery(
    window: Window, sent_at: dict[str, float], first_text: dict[str, float], only: set[str] | None = None
) -> tuple[float, int]:
    """Seconds from the window's end until the last text it held up went out, and how many it held
    up: the texts of calls made before the fault ended and not yet texted when it began."""
    held = [
        texted
        for caller, texted in first_text.items()
        if (only is None or caller in only) and sent_at[caller] < window.end and texted > window.start
    ]
    return (max(0.0, max(held) - window.end) if held else 0.0), len(held)

"""What scheduling refuses, as members of the one family of domain refusals (`nmc.problems`).

A missing id is `nmc.problems.NotFound`, an unusable value `nmc.problems.InvalidField`; what is
particular to scheduling is a `nmc.problems.Conflict` (409) with its own title. `app.py` renders the
whole family as problem details; a refused slot is an expected answer, never logged as an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from advanced_alchemy.exceptions import IntegrityError

from nmc.problems import Conflict, DomainError, InvalidField, NotFound
from nmc.scheduling import schemas


class SlotTaken(Conflict):
    """The slot overlaps a booking, a live hold or a busy block; `conflict` names it when known."""

    title = "Slot taken"

    def __init__(self, conflict: schemas.Conflict | None) -> None:
        what = (
            f"a {conflict.kind.replace('_', ' ')} ({conflict.start.isoformat()} to {conflict.end.isoformat()})"
            if conflict
            else "another booking or hold"
        )
        super().__init__(f"The slot overlaps {what}")
        self.conflict = conflict

    def problem_extra(self) -> dict[str, Any]:
        return {"conflict": msgspec.to_builtins(self.conflict)} if self.conflict else {}


class HoldExpiredError(Conflict):
    """The hold ran out before it was booked. (`Error`: `HoldExpired` is the event that says so.)"""

    title = "Hold expired"

    def __init__(self) -> None:
        super().__init__("The hold expired before it was booked; hold the slot again")


class NotConfirmed(Conflict):
    title = "Booking cancelled"

    def __init__(self) -> None:
        super().__init__("A cancelled booking cannot be rescheduled")


class NameTaken(Conflict):
    title = "Name taken"

    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"A {what} named {name!r} exists already")

    def problem_extra(self) -> dict[str, Any]:
        return {"field": "name"}


class InUse(Conflict):
    title = "In use"

    def __init__(self, what: str) -> None:
        super().__init__(f"The {what} has bookings; deactivate it instead (PATCH active=false)")


# What a hold or a booking of a slot can be refused with once the caller has picked the slot: it is
# taken (`SlotTaken`), the hold ran out (`HoldExpiredError`) or is gone (`NotFound`), or the slot is no
# longer bookable — minimum notice passed, hours or job type changed (`InvalidField`). A caller that
# offers fresh times on any of them catches this tuple: `except SCHEDULING_REFUSALS`.
SCHEDULING_REFUSALS: tuple[type[DomainError], ...] = (SlotTaken, HoldExpiredError, NotFound, InvalidField)


@contextmanager
def refused_on_unique(constraint: str, refusal: DomainError) -> Iterator[None]:
    """Turn a violation of the unique `constraint` (raised at flush) into `refusal`.

    Matched by the constraint's name: advanced-alchemy 1.12 does not classify asyncpg's unique
    violations as `DuplicateKeyError` (its pattern expects psycopg's two-line message), so they
    arrive as its `IntegrityError`.
    """
    try:
        yield
    except IntegrityError as exc:
        if constraint in str(exc.__cause__):
            raise refusal from None
        raise

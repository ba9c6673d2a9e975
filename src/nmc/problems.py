"""The one family of domain refusals, and how each becomes problem details.

Every module raises a `DomainError` subclass for a request it refuses (a missing thread, a taken
slot, a value it cannot use). They do not subclass Litestar's HTTP exceptions: a service can be
called from the CLI, the worker or a test without pulling HTTP in. `app.py` maps the whole family to
RFC 9457 problem details once (`domain_problem`); the CLI prints `detail`. Expected refusals are
never logged as unhandled errors.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.plugins.problem_details import ProblemDetailsException

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_MISSING_PARAMETER = re.compile(r"Missing required \w+ parameter '([^']+)'")
NUL = "\x00"
# A JSON body can only hold a NUL character escaped; most bodies are spared the walk.
_ESCAPED_NUL = b"\\u0000"


class DomainError(Exception):
    """A request the domain refuses: `status_code`, `title` and `detail` of its problem details."""

    status_code: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def problem_extra(self) -> dict[str, Any]:
        """Members beside type/title/status/detail in the problem body (e.g. `field`)."""
        return {}


class NotFound(DomainError):
    """No such thing for the caller's tenant (another tenant's is not found either)."""

    status_code = 404
    title = "Not found"

    def __init__(self, what: str) -> None:
        super().__init__(f"No such {what}")


class Conflict(DomainError):
    """The request is valid but the current state forbids it."""

    status_code = 409
    title = "Conflict"


class InvalidField(DomainError, ValueError):
    """A value the caller sent cannot be used; `field` names it (a `ValueError` to the CLI)."""

    status_code = 422
    title = "Invalid field"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def problem_extra(self) -> dict[str, Any]:
        return {"field": self.field}


# The calendar the API serves: far wider than any booking or report, far from the ends of Python's
# datetime (years 1-9999), where a time zone or a duration added to an instant overflows.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def check_moment(value: datetime, field: str) -> datetime:
    """An instant the API can work with: with a UTC offset, between 1900 and 2999 (else `InvalidField`)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidField(field, "needs a UTC offset (RFC 3339)")
    if not EARLIEST <= value < LATEST:
        raise InvalidField(field, f"must be between {EARLIEST.year} and {LATEST.year - 1}")
    return value


def check_day(value: date, field: str) -> date:
    """A calendar day the API can work with: between 1900 and 2999 (else `InvalidField`)."""
    if not EARLIEST.date() <= value < LATEST.date():
        raise InvalidField(field, f"must be between {EARLIEST.year} and {LATEST.year - 1}")
    return value


def nul_path(value: Any, path: str = "") -> str | None:
    """Where the first NUL character is in a decoded JSON value or a form (a key or a string), or None.

    Postgres text cannot hold one, so a value carrying it must be refused before it reaches SQL."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                return where
            if (found := nul_path(item, where)) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{index}]")) is not None:
                return found
    return None


async def refuse_nul_characters(request: Request[Any, Any, Any]) -> None:
    """A `before_request` hook: a path value, query parameter or JSON string holding a NUL character is a
    422 naming it (the JSON path of the first such string), before any handler or SQL sees it."""
    query = request.query_params.multi_items()
    found = nul_path(request.path_params) or next((k for k, v in query if NUL in k or NUL in v), None)
    if found is None and _ESCAPED_NUL in (body := await request.body()):
        try:
            found = nul_path(msgspec.json.decode(body))
        except msgspec.DecodeError:
            return  # not JSON: the schema check refuses it
    if found is not None:
        raise InvalidField(found.replace(NUL, "\\u0000"), "must not contain NUL (\\u0000) characters")


def domain_problem(exc: DomainError) -> ProblemDetailsException:
    """Registered once in `app.py` for the whole family."""
    return ProblemDetailsException(
        status_code=exc.status_code, title=exc.title, detail=exc.detail, extra=exc.problem_extra() or None
    )


def schema_problem(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's 400 for a request that fails the schema, as a 422 naming the first bad field."""
    errors = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
    missing = _MISSING_PARAMETER.search(str(exc.detail))
    field = missing.group(1) if missing else "body"
    for error in errors:
        message = str(error.get("message", ""))
        unknown = _UNKNOWN_FIELD.search(message) or _MISSING_FIELD.search(message)
        key = unknown.group(1) if unknown else error.get("key")
        if key and key != "data":
            # msgspec writes a dict value's path as `weekly_hours[...][0]`: name the field itself.
            field = str(key).split("[...]")[0]
            break
    # Litestar's own detail names the request path (ids included); ours names only fields.
    detail = "; ".join(f"{e.get('key')}: {e.get('message')}" for e in errors) or (
        f"{field}: required" if missing else "The request does not match the schema"
    )
    return ProblemDetailsException(
        status_code=422, title="Invalid field", detail=detail, extra={"field": field, "errors": errors}
    ).to_response(request)

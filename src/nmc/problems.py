"""The one family of domain refusals, and how each becomes problem details.

Every module raises a `DomainError` subclass for a request it refuses (a missing thread, a taken
slot, a value it cannot use). They do not subclass Litestar's HTTP exceptions: a service can be
called from the CLI, the worker or a test without pulling HTTP in. `app.py` maps the whole family to
RFC 9457 problem details once (`domain_problem`); the CLI prints `detail`. Expected refusals are
never logged as unhandled errors.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.plugins.problem_details import ProblemDetailsException

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_PARAMETER = re.compile(r"Missing required \w+ parameter '([^']+)'")


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
        unknown = _UNKNOWN_FIELD.search(str(error.get("message", "")))
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

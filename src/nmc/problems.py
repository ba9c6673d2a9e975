"""Client errors as problem details: the error every module raises for a value it cannot use, and
the 422 every `/api` route answers for a request that does not fit its schema."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.plugins.problem_details import ProblemDetailsException

_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_PARAMETER = re.compile(r"Missing required \w+ parameter '([^']+)'")


class InvalidField(ProblemDetailsException, ValueError):
    """A value the caller sent cannot be used; `field` names it.

    Over HTTP a 422 problem-details body (`{"field": ...}`); to the CLI, which catches `ValueError`,
    a message (`detail`). Scheduling's refusals (`nmc.scheduling.service`) keep their own family.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(status_code=422, title="Invalid field", detail=f"{field}: {message}", extra={"field": field})
        self.field = field


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

"""The client error every module raises for a value it cannot use."""

from __future__ import annotations

from litestar.plugins.problem_details import ProblemDetailsException


class InvalidField(ProblemDetailsException, ValueError):
    """A value the caller sent cannot be used; `field` names it.

    Over HTTP a 422 problem-details body (`{"field": ...}`); to the CLI, which catches `ValueError`,
    a message (`detail`). Scheduling's refusals (`nmc.scheduling.service`) keep their own family.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(status_code=422, title="Invalid field", detail=f"{field}: {message}", extra={"field": field})
        self.field = field

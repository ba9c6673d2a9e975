"""Tenant message templates with merge fields: {business_name}, {caller_number}, {booking_prompt}."""

from __future__ import annotations

import string
from dataclasses import dataclass

MERGE_FIELDS = frozenset({"business_name", "caller_number", "booking_prompt"})
STOP_NOTICE = "Reply STOP to opt out."

DEFAULT_BOOKING_PROMPT = "Reply BOOK to pick a time for a visit."
DEFAULT_BUSINESS_HOURS = (
    "Hi, this is {business_name}. Sorry we missed your call! How can we help? {booking_prompt} " + STOP_NOTICE
)
DEFAULT_AFTER_HOURS = (
    "Hi, this is {business_name}. We're closed right now but saw your call. Text us what you need and "
    "we'll get back to you first thing. {booking_prompt} " + STOP_NOTICE
)


class UnknownMergeField(ValueError):
    def __init__(self, field: str) -> None:
        super().__init__(f"unknown merge field {{{field}}}; use {sorted(MERGE_FIELDS)}")
        self.field = field


def check_template(template: str) -> str:
    """Raise `UnknownMergeField` naming the first field we cannot fill (or a malformed brace)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UnknownMergeField(str(exc)) from None
    for name in fields:
        if name not in MERGE_FIELDS:
            raise UnknownMergeField(name)
    return template


@dataclass(frozen=True)
class MergeValues:
    business_name: str
    caller_number: str
    booking_prompt: str


def render(template: str, values: MergeValues) -> str:
    text = template.format_map(
        {
            "business_name": values.business_name,
            "caller_number": values.caller_number,
            "booking_prompt": values.booking_prompt,
        }
    )
    return " ".join(text.split())

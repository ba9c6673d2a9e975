"""Tenant message templates with merge fields: {business_name}, {caller_number}, {booking_prompt}."""

from __future__ import annotations

import string
from dataclasses import dataclass

import structlog

log = structlog.get_logger(module="conversations")

MERGE_FIELDS = frozenset({"business_name", "caller_number", "booking_prompt"})
STOP_NOTICE = "Reply STOP to opt out."

DEFAULT_BOOKING_PROMPT = "Reply BOOK to pick a time for a visit."
DEFAULT_FIRST_SMS_BUSINESS_HOURS = (
    "Hi, this is {business_name}. Sorry we missed your call! How can we help? {booking_prompt} " + STOP_NOTICE
)
DEFAULT_FIRST_SMS_AFTER_HOURS = (
    "Hi, this is {business_name}. We're closed right now but saw your call. Text us what you need and "
    "we'll get back to you first thing. {booking_prompt} " + STOP_NOTICE
)


DEFAULT_FOLLOW_UP = (
    "Hi, it's {business_name} again. Just checking in: can we help with anything? {booking_prompt} " + STOP_NOTICE
)
DEFAULT_HELP = (
    "{business_name}: text us here and we'll reply, or call this number. Msg & data rates may apply. " + STOP_NOTICE
)
# The booking prompt is merged into the other templates as plain text: it has no merge fields.
BOOKING_PROMPT_FIELDS: frozenset[str] = frozenset()
ALERT_PREVIEW_LENGTH = 120


class UnknownMergeField(ValueError):
    def __init__(self, field: str, allowed: frozenset[str] = MERGE_FIELDS) -> None:
        hint = f"use {sorted(allowed)}" if allowed else "this text takes no merge fields"
        super().__init__(f"unknown merge field {{{field}}}; {hint}")
        self.field = field


def check_template(template: str, allowed: frozenset[str] = MERGE_FIELDS) -> str:
    """Raise `UnknownMergeField` naming the first field we cannot fill (or a malformed brace)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise UnknownMergeField(str(exc), allowed) from None
    for name in fields:
        if name not in allowed:
            raise UnknownMergeField(name, allowed)
    return template


@dataclass(frozen=True)
class MergeValues:
    business_name: str
    caller_number: str
    booking_prompt: str | None = None  # the tenant's; None: ours (`DEFAULT_BOOKING_PROMPT`)


def render(template: str, values: MergeValues) -> str:
    text = template.format_map(
        {
            "business_name": values.business_name,
            "caller_number": values.caller_number,
            "booking_prompt": values.booking_prompt or DEFAULT_BOOKING_PROMPT,
        }
    )
    return " ".join(text.split())


def render_or_default(template: str | None, default: str, values: MergeValues) -> str:
    """The tenant's template, or the default when there is none or it cannot be filled (logged: a
    template saved before a merge field was removed must not block the text)."""
    try:
        return render(check_template(template or default), values)
    except UnknownMergeField as exc:
        log.warning("template.unusable", error=str(exc))
        return render(default, values)


def owner_alert_text(business_name: str, caller: str, body: str, num_media: int) -> str:
    """The SMS the owner gets about a caller's message (to the owner: the full number and a preview)."""
    said = " ".join(body.split())
    if len(said) > ALERT_PREVIEW_LENGTH:
        said = said[: ALERT_PREVIEW_LENGTH - 1] + "…"
    if not said:
        said = "(a photo)" if num_media == 1 else f"({num_media} attachments)" if num_media else "(empty message)"
    return f'{business_name}: new message from {caller}: "{said}" Reply from your NeverMissCall inbox.'

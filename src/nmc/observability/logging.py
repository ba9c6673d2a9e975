"""structlog JSON logs with the runbook's context keys; phone numbers masked, bodies and secrets dropped."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from nmc.settings import SECRET_NAMES

CONTEXT_KEYS = ("tenant_id", "module", "event_name", "correlation_id", "http_status")
_PHONE = re.compile(r"\+\d{7,15}")
# Keys whose values never reach a log line at INFO and above.
_PRIVATE_KEYS = frozenset({"body", "message_body", "Body", "text"}) | {k.lower() for k in SECRET_NAMES}
_SECRET_KEYS = frozenset({"authorization", "auth_token", "password", "secret", "token", "api_key"})


def mask_phone(number: str) -> str:
    """`+15551234567` → `+1555***4567`: enough to tell numbers apart, not enough to dial."""
    if len(number) < 9:
        return "***"
    return f"{number[:5]}***{number[-4:]}"


def mask_text(value: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: ("***" if str(k).lower() in _SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def scrub_private_data(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask phone numbers everywhere, drop bodies and secrets."""
    debug = method == "debug"
    for key in list(event_dict):
        lowered = key.lower()
        if lowered in _SECRET_KEYS or (lowered in _PRIVATE_KEYS and not debug):
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub_private_data,
        structlog.processors.JSONRenderer(),
    ]


def configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level)
    structlog.configure(
        processors=processors(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library: same stream, same masking, as JSON.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors()[1:]],
            foreign_pre_chain=[structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    for noisy in ("httpx", "httpcore", "uvicorn.access", "sqlalchemy.engine"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def bind_event_context(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**{k: (str(v) if v is not None else None) for k, v in values.items()})


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()

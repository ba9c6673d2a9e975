"""structlog logs (JSON or console, LOG_FORMAT) with the runbook's context keys, for our lines and every
library's; phone numbers masked, bodies and secrets dropped."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from nmc.settings import SECRET_NAMES, get_settings

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


def processors(log_format: str = "json", stream: TextIO | None = None) -> list[Processor]:
    """The chain every line goes through, ours and the libraries' alike."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub_private_data,
        renderer(log_format, stream or sys.stdout),
    ]


def renderer(log_format: str, stream: TextIO) -> Processor:
    if log_format == "json":
        return structlog.processors.JSONRenderer()
    # format_exc_info has already turned a traceback into (masked) text: print that, not a pretty
    # re-rendering of the exception that would bypass the masking.
    return structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)


def mask_query(target: str) -> str:
    """`/x?token=abc&page=2` → `/x?token=***&page=***`: parameter names stay, values never reach a log."""
    path, _, query = target.partition("?")
    if not query:
        return path
    return f"{path}?" + "&".join(f"{part.partition('=')[0]}=***" for part in query.split("&"))


def describe_access(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """A `uvicorn.access` record becomes method, path (query values masked) and status fields."""
    args = event_dict.pop("positional_args", ())
    record = event_dict.get("_record")
    if record is not None and record.name == "uvicorn.access" and len(args) == 5:
        _client, method, target, _http_version, status = args
        event_dict.update(event="http.access", method=method, path=mask_query(str(target)), http_status=status)
    return event_dict


def stdlib_formatter(log_format: str, stream: TextIO) -> structlog.stdlib.ProcessorFormatter:
    """Renders standard-library records (uvicorn, Dramatiq, PgQueuer, asyncio…) like our own lines."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, describe_access],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors(log_format, stream)],
        pass_foreign_args=True,
    )


def configure_logging(level: str, log_format: str | None = None, stream: TextIO | None = None) -> None:
    """Our lines and every library's, one format (LOG_FORMAT unless given) on one stream (stdout)."""
    numeric = logging.getLevelName(level)
    log_format = log_format or get_settings().LOG_FORMAT
    stream = stream or sys.stdout
    structlog.configure(
        processors=processors(log_format, stream),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(stdlib_formatter(log_format, stream))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    _send_library_loggers_to_root()
    logging.captureWarnings(True)  # Python's warnings too, instead of bare lines on stderr
    for noisy in ("httpx", "httpcore", "sqlalchemy.engine", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _send_library_loggers_to_root() -> None:
    """Loggers that brought handlers of their own (Litestar's default config gives `litestar` one,
    uvicorn's default config its loggers) log through the root handler instead."""
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger) and any(type(h) is not logging.NullHandler for h in logger.handlers):
            logger.handlers.clear()
            logger.propagate = True


def bind_event_context(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**{k: (str(v) if v is not None else None) for k, v in values.items()})


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()

"""Who reacts to which event. Modules register their handlers with `@subscriber(EventType)`."""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Any, TypeVar

from nmc.events.catalog import DomainEvent

Handler = Callable[[Any], Awaitable[None]]
H = TypeVar("H", bound=Handler)

_REGISTRY: dict[str, list[Handler]] = defaultdict(list)

# Modules whose handlers.py registers subscribers; the worker imports them all at start.
HANDLER_MODULES = (
    "nmc.telephony.handlers",
    "nmc.conversations.handlers",
    "nmc.scheduling.handlers",
)


def subscriber(event_type: type[DomainEvent]) -> Callable[[H], H]:
    """Register an idempotent handler: it may run more than once for one event (at-least-once)."""

    def register(handler: H) -> H:
        handlers = _REGISTRY[event_type.name]
        if handler not in handlers:
            handlers.append(handler)
        return handler

    return register


def handlers_for(event_name: str) -> list[Handler]:
    load_handler_modules()  # never dispatch (and mark dispatched) before every subscriber is known
    return list(_REGISTRY.get(event_name, ()))


@cache
def load_handler_modules() -> None:
    """Import every module's subscribers, once per process."""
    for module in HANDLER_MODULES:
        importlib.import_module(module)

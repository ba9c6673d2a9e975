"""Who reacts to which event. Modules register their handlers with `@subscriber(EventType)` in their
`handlers.py`; the worker's composition root (`nmc.worker.load_subscribers`) imports them all and
then declares the registry complete. Publishing never consults this registry: only the process that
dispatches knows (and must know) every subscriber."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nmc.events.catalog import DomainEvent

Handler = Callable[[Any], Awaitable[None]]
H = TypeVar("H", bound=Handler)

_REGISTRY: dict[str, list[Handler]] = defaultdict(list)
_complete = False


class SubscribersNotLoaded(RuntimeError):
    """Dispatching before every subscriber is known would mark events dispatched that nobody handled."""


def subscriber(event_type: type[DomainEvent]) -> Callable[[H], H]:
    """Register an idempotent handler: it may run more than once for one event (at-least-once)."""

    def register(handler: H) -> H:
        handlers = _REGISTRY[event_type.name]
        if handler not in handlers:
            handlers.append(handler)
        return handler

    return register


def registry_complete() -> None:
    """Called once every module's handlers are imported: dispatching may start."""
    global _complete
    _complete = True


def _require_complete() -> None:
    if not _complete:
        raise SubscribersNotLoaded("the worker dispatches only after nmc.worker.load_subscribers()")


def handlers_for(event_name: str) -> list[Handler]:
    _require_complete()
    return list(_REGISTRY.get(event_name, ()))


def subscribed_event_names() -> list[str]:
    """What this process handles; the sweep settles every other event, so it must know them all."""
    _require_complete()
    return [name for name, handlers in _REGISTRY.items() if handlers]

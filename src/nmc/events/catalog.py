"""The Event Catalog: one versioned msgspec Struct per domain event.

Outbox rows are business facts: a row is written only from a catalog event, and a row read back
(dispatch, replay) is validated against the catalog entry for its name and version.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID, uuid4

import msgspec

E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9]\d{6,14}$", description="Phone number in E.164")]


def _now() -> datetime:
    return datetime.now(UTC)


class DomainEvent(msgspec.Struct, kw_only=True, frozen=True):
    """Envelope fields every event carries."""

    name: ClassVar[str]
    version: ClassVar[int]

    event_id: UUID = msgspec.field(default_factory=uuid4)
    occurred_at: datetime = msgspec.field(default_factory=_now)
    tenant_id: UUID | None = None
    correlation_id: str
    causation_id: str | None = None


class TenantCreated(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "tenant.created"
    version: ClassVar[int] = 1

    tenant_id: UUID
    business_name: str


class CallMissed(DomainEvent, kw_only=True, frozen=True):
    """A caller reached a tenant number and nobody answered: text them back."""

    name: ClassVar[str] = "call.missed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    call_id: UUID
    call_sid: str
    caller: E164
    tenant_number: E164
    dial_status: str
    # When our web received the webhook: the start of the first-SMS latency.
    webhook_received_at: datetime


class FirstSmsSent(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "sms.first_sent"
    version: ClassVar[int] = 1

    tenant_id: UUID
    call_id: UUID
    message_id: UUID
    latency_ms: float


class MessageStatusChanged(DomainEvent, kw_only=True, frozen=True):
    name: ClassVar[str] = "message.status_changed"
    version: ClassVar[int] = 1

    tenant_id: UUID
    message_id: UUID
    status: str
    error_code: int | None = None


CATALOG: dict[tuple[str, int], type[DomainEvent]] = {
    (event.name, event.version): event for event in (TenantCreated, CallMissed, FirstSmsSent, MessageStatusChanged)
}


class UnknownEvent(ValueError):
    """A row names an event (or version) the catalog does not hold."""


def catalog_entry(name: str, version: int) -> type[DomainEvent]:
    try:
        return CATALOG[(name, version)]
    except KeyError:
        raise UnknownEvent(f"{name} v{version} is not in the Event Catalog") from None


def validated(event: DomainEvent) -> dict[str, Any]:
    """The event as the JSON the outbox stores, checked against its Struct's constraints."""
    payload: dict[str, Any] = msgspec.to_builtins(event)
    msgspec.convert(payload, type(event))
    return payload


def load_event(name: str, version: int, payload: dict[str, Any]) -> DomainEvent:
    """Rebuild a stored event; raises `msgspec.ValidationError` if it no longer fits the catalog."""
    return msgspec.convert(payload, catalog_entry(name, version))


def json_schemas() -> dict[str, Any]:
    """Every event's JSON Schema, keyed `name@vN` (`just catalog`)."""
    events = list(CATALOG.values())
    schemas, components = msgspec.json.schema_components(events, ref_template="#/$defs/{name}")
    return {
        "events": {f"{e.name}@v{e.version}": schema for e, schema in zip(events, schemas, strict=True)},
        "$defs": components,
    }

"""The Event Catalog: versioned msgspec Structs with correlation/causation ids, validated both ways."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import msgspec
import pytest

from nmc.events.catalog import (
    CATALOG,
    CallMissed,
    DomainEvent,
    MessageStatusChanged,
    TenantCreated,
    UnknownEvent,
    catalog_entry,
    json_schemas,
    load_event,
    validated,
)
from tests.conftest import run_cli

ENTRIES = sorted(CATALOG.items())


def _call_missed(**overrides: object) -> CallMissed:
    values: dict[str, object] = {
        "tenant_id": uuid4(),
        "call_id": uuid4(),
        "call_sid": "CA" + "a" * 32,
        "caller": "+15551234567",
        "tenant_number": "+15557654321",
        "dial_status": "no-answer",
        "webhook_received_at": datetime.now(UTC),
        "correlation_id": "req-1",
    }
    values.update(overrides)
    return CallMissed(**values)  # type: ignore[arg-type]


def test_catalog_is_not_empty_and_holds_the_core_path_events() -> None:
    names = {name for name, _ in CATALOG}
    assert {"tenant.created", "call.missed"} <= names


@pytest.mark.parametrize(("key", "event_type"), ENTRIES, ids=[f"{n}@v{v}" for (n, v), _ in ENTRIES])
def test_every_entry_is_a_versioned_struct_with_correlation_and_causation(
    key: tuple[str, int], event_type: type[DomainEvent]
) -> None:
    name, version = key
    assert issubclass(event_type, msgspec.Struct)
    assert issubclass(event_type, DomainEvent)
    assert (event_type.name, event_type.version) == (name, version)
    assert isinstance(version, int) and version >= 1
    assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", name), name
    fields = {f.name: f for f in msgspec.structs.fields(event_type)}
    for envelope in ("event_id", "occurred_at", "tenant_id", "correlation_id", "causation_id"):
        assert envelope in fields, f"{name} lacks {envelope}"
    assert fields["correlation_id"].required, "correlation_id must be given by the publisher"
    assert not fields["causation_id"].required
    assert event_type.__struct_config__.frozen
    # the class-level name/version never leak into the payload as fields
    assert "name" not in fields and "version" not in fields


def test_catalog_names_are_unique_per_version_and_resolvable() -> None:
    for (name, version), event_type in CATALOG.items():
        assert catalog_entry(name, version) is event_type
    assert len(set(CATALOG.values())) == len(CATALOG)


def test_validated_returns_the_stored_json_and_load_event_rebuilds_it() -> None:
    event = _call_missed(causation_id="webhook-1")
    payload = validated(event)
    assert json.loads(json.dumps(payload)) == payload  # plain JSON for the outbox column
    assert payload["correlation_id"] == "req-1"
    assert payload["causation_id"] == "webhook-1"
    assert payload["event_id"] == str(event.event_id)
    assert load_event(CallMissed.name, CallMissed.version, payload) == event


@pytest.mark.parametrize(
    "bad",
    [
        {"caller": "5551234567"},  # not E.164
        {"tenant_number": "+0123"},
        {"caller": 15551234567},
    ],
)
def test_validated_rejects_a_payload_that_breaks_the_struct(bad: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        validated(_call_missed(**bad))


def test_validated_rejects_wrong_types_in_a_simple_event() -> None:
    event = MessageStatusChanged(
        tenant_id=uuid4(),
        message_id=uuid4(),
        status=404,  # type: ignore[arg-type]
        correlation_id="c",
    )
    with pytest.raises(msgspec.ValidationError, match="status"):
        validated(event)


def test_load_event_rejects_unknown_names_versions_and_bad_payloads() -> None:
    payload = validated(TenantCreated(tenant_id=uuid4(), business_name="Acme", correlation_id="c"))
    with pytest.raises(UnknownEvent, match=r"tenant\.created v99"):
        load_event("tenant.created", 99, payload)
    with pytest.raises(UnknownEvent):
        load_event("tenant.exploded", 1, payload)
    with pytest.raises(msgspec.ValidationError, match="correlation_id"):
        load_event("tenant.created", 1, {k: v for k, v in payload.items() if k != "correlation_id"})
    with pytest.raises(msgspec.ValidationError):
        load_event("tenant.created", 1, {**payload, "tenant_id": "not-a-uuid"})


def test_json_schemas_cover_every_event_with_envelope_fields() -> None:
    schemas = json_schemas()
    assert set(schemas["events"]) == {f"{n}@v{v}" for n, v in CATALOG}
    for key, schema in schemas["events"].items():
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), key
        definition = schemas["$defs"][ref.removeprefix("#/$defs/")]
        assert definition["type"] == "object"
        assert {"correlation_id", "causation_id", "event_id", "tenant_id"} <= set(definition["properties"]), key
        assert "correlation_id" in definition["required"], key


def test_e164_constraint_is_in_the_published_schema() -> None:
    definition = json_schemas()["$defs"]["CallMissed"]
    assert definition["properties"]["caller"]["pattern"] == r"^\+[1-9]\d{6,14}$"


def test_nmc_catalog_prints_the_json_schema_of_every_event(tmp_path: Path) -> None:
    result = run_cli("catalog")
    printed = json.loads(result.stdout)
    assert set(printed["events"]) == {f"{n}@v{v}" for n, v in CATALOG}
    assert printed == json.loads(json.dumps(json_schemas()))

    target = tmp_path / "catalog.json"
    run_cli("catalog", "--output", str(target))
    assert json.loads(target.read_text()) == printed

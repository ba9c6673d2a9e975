"""Module boundaries: the import contracts hold (and would catch a breach), and no module's SQL
touches another module's tables (only the views and statements a module publishes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "nmc"

# Which module owns each table. Other modules reach these only through the owner's public face:
# its functions, or the SQL it publishes (identity's views, OPTED_OUT_SQL, LANDLINE_SQL, CIRCUIT_SQL, fact_cte).
OWNER = {
    "tenants": "identity",
    "tenant_phone_numbers": "identity",
    "users": "identity",
    "conv_threads": "conversations",
    "conv_messages": "conversations",
    "conv_opt_outs": "conversations",
    "conv_opt_out_events": "conversations",
    "conv_settings": "conversations",
    "conv_early_statuses": "conversations",
    "conv_phone_facts": "messaging",
    "sms_sending_state": "messaging",
    "conv_kpi_facts": "kpis",
    "conv_booking_dialogs": "booking_by_sms",
    "conv_calls": "telephony",
    "telephony_test_calls": "telephony",
    "webhook_events": "webhooks",
    "outbox_events": "events",
    "outbox_events_errors": "events",
    "billing_accounts": "billing",
    "billing_usage": "billing",
    "calendar_connections": "calendars",
    "calendar_channels": "calendars",
    "calendar_oauth_states": "calendars",
    "calendar_event_links": "calendars",
    "calendar_counters": "calendars",
}
PUBLISHED_VIEWS = {"tenant_profiles", "tenant_numbers"}  # identity's, for every module's SQL
DOMAIN_MODULES = {
    "identity",
    "messaging",
    "scheduling",
    "conversations",
    "kpis",
    "booking_by_sms",
    "telephony",
    "billing",
    "calendars",
}
_TABLE_REFERENCE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE|TRUNCATE)\s+([a-z_]+)")


def _owner(table: str) -> str | None:
    return "scheduling" if table.startswith("sched_") else OWNER.get(table)


def test_no_module_reads_or_writes_another_modules_tables() -> None:
    breaches = []
    for module in sorted(DOMAIN_MODULES):
        for path in sorted((PACKAGE / module).rglob("*.py")):
            for table in _TABLE_REFERENCE.findall(path.read_text()):
                owner = _owner(table)
                if owner is not None and owner != module:
                    breaches.append(f"{path.relative_to(ROOT)}: {table} belongs to {owner}")
    assert breaches == []


def test_the_table_scan_sees_a_breach() -> None:
    sql = "SELECT 1 FROM conv_messages m JOIN sched_bookings b ON true"
    assert [_owner(table) for table in _TABLE_REFERENCE.findall(sql)] == ["conversations", "scheduling"]


def _lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        env={"PYTHONPATH": str(source_root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("module", "breach"),
    [
        ("conversations/service.py", "from nmc.messaging.decision import decide"),  # another's insides
        ("scheduling/service.py", "from nmc.conversations import queue_text"),  # a lower layer, a higher one
        ("scheduling/booking.py", "import nmc.calendars"),  # scheduling asks calendars only through its hook
        ("calendars/service.py", "from nmc.conversations import queue_text"),  # the owner is told by an event
        ("events/outbox.py", "import nmc.conversations"),  # infrastructure reaching into a domain
        ("identity/service.py", "import nmc.conversations"),  # a lower layer importing a higher one
        ("settings.py", "import nmc.identity"),  # the foundation importing a domain module
    ],
)
def test_the_import_contracts_catch_a_breach(tmp_path: Path, module: str, breach: str) -> None:
    copy = tmp_path / "nmc"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{breach}  # noqa\n")
    result = _lint_imports(tmp_path)
    importer = "nmc." + module.removesuffix(".py").replace("/", ".")
    assert result.returncode != 0
    assert f"{importer} -> " in result.stdout  # named as the breach


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr

"""Alerts and dashboards, checked (issue #13): `promtool check rules` and `promtool test rules` on
ops/prometheus/, every Grafana panel's PromQL parses (promtool, through a throwaway rules file) and
names metrics the web's `/metrics` really exposes, and every alert links to a playbook that exists.

promtool comes from Debian's `prometheus` package (`.ci/run` installs it when missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.integration.test_observability import exposed_names

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "ops" / "prometheus"
GRAFANA = ROOT / "ops" / "grafana"
RUNBOOK = ROOT / "docs" / "runbook.md"
ONCALL = ROOT / "docs" / "oncall.md"

# Runbook §6, each with its threshold and duration (and the other pages issue #13 asks for).
RUNBOOK_ALERTS = {
    "FirstSmsSloBreach": ("slo_first_sms_p95_seconds > 5", "10m"),
    "OutboxLag": ("outbox_dispatch_lag_seconds > 60", "10m"),
    "WebhookSignatureFailures": ("* 60 > 10", "5m"),
    "CalendarSyncErrors": ("calendar_sync_errors_total", "15m"),
    "DbConnectionsSaturated": ("db_connections_in_use / db_connections_max > 0.8", "10m"),
}
ISSUE_ALERTS = {
    "OutboxParkedGrowing",
    "WorkerNotHeartbeating",
    "JobsNotHeartbeating",
    "RetentionNotRun",
    "CalendarPushChannelsExpiring",
    "SmsSendingCircuitOpen",
    "FirstSmsOverdue",
    "RestoreDrillOverdue",
}
# Names a module will export but does not yet (none now: calendars exports its channel gauge).
FUTURE_METRICS: set[str] = set()
# Series Prometheus makes itself.
PROMETHEUS_SERIES = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (.ci/run does)")
    return path


# promtool's unit tests of alerts.yml: alerts about days in their own file, evaluated every 10 minutes.
ALERT_TESTS = ("alerts.test.yml", "alerts.days.test.yml")


def run_promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(GRAFANA.glob("*.json"))}


def panel_expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every query of every panel."""
    found = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((name, panel["title"], target["expr"]))
    return found


# ------------------------------------------------------------------------------------------ PromQL names

_FUNCTIONS_AND_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "absent",
    "absent_over_time", "time", "vector", "scalar", "abs", "clamp_min", "clamp_max", "label_replace",
    "max_over_time", "min_over_time", "avg_over_time", "sum_over_time", "changes", "resets", "predict_linear",
    "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a tokenizer, enough for our rules and panels)."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings (label values)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        token, call = match.group(1), match.group(2)
        if call or token.lower() in _FUNCTIONS_AND_KEYWORDS or re.fullmatch(r"\d+[smhdwy]", token):
            continue
        names.add(token)
    return names


def test_the_name_tokenizer_reads_what_it_must() -> None:
    expr = (
        'sum by (provider) (rate(provider_requests_total{outcome=~"server_error|timeout"}[5m])) '
        "/ on (provider) sum by (provider) (rate(provider_requests_total[5m])) > 0.1 "
        "or histogram_quantile(0.95, sum by (le) (rate(first_sms_latency_seconds_bucket[5m])))"
    )
    assert metric_names(expr) == {"provider_requests_total", "first_sms_latency_seconds_bucket"}
    assert metric_names("time() - max(x_timestamp_seconds) > 2 * 86400") == {"x_timestamp_seconds"}


# ------------------------------------------------------------------------------------------ alerts


def test_promtool_check_rules_accepts_the_alerts() -> None:
    result = run_promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", *ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    tests = [case for name in ALERT_TESTS for case in yaml.safe_load((PROMETHEUS / name).read_text())["tests"]]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fired == set(), "alerts no test makes fire"
    assert names - quiet == set(), "alerts no test shows staying quiet"


def test_runbook_section_6_alerts_keep_their_thresholds_and_durations() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, (expression, duration) in RUNBOOK_ALERTS.items():
        assert expression in " ".join(rules[name]["expr"].split()), name
        assert rules[name]["for"] == duration, name
    assert set(rules) >= ISSUE_ALERTS


def github_anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_links_to_a_playbook_section_that_exists() -> None:
    anchors = {github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    oncall = ONCALL.read_text()
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbook.md", url
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbook.md"
        assert rule["alert"] in oncall, f"{rule['alert']} is not in docs/oncall.md"


# ------------------------------------------------------------------------------------------ dashboards

RUNBOOK_DASHBOARDS = {
    "slo-overview.json",
    "outbox-health.json",
    "webhook-health.json",
    "calendar-sync.json",
    "scheduling-conflicts.json",
    "provider-error-rates.json",
}


def test_the_six_runbook_dashboards_are_provisioning_ready() -> None:
    boards = dashboards()
    assert set(boards) == RUNBOOK_DASHBOARDS
    uids = [board["uid"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        assert "id" not in board or board["id"] is None, name  # provisioning assigns ids
        assert board["panels"], name
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", name
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"], (name, panel["title"])


def test_every_panel_query_parses(tmp_path: Path) -> None:
    rules = [{"record": f"check:panel_{i}", "expr": expr} for i, (_, _, expr) in enumerate(panel_expressions())]
    throwaway = tmp_path / "panels.yml"
    throwaway.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = run_promtool("check", "rules", str(throwaway), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_panel_that_does_not_parse_is_caught(tmp_path: Path) -> None:
    throwaway = tmp_path / "bad.yml"
    throwaway.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "r", "expr": "sum(rate(x[5m])"}]}]})
    )
    assert run_promtool("check", "rules", str(throwaway), cwd=tmp_path).returncode != 0


def _known(name: str, exposed: set[str]) -> bool:
    if name in exposed or name in FUTURE_METRICS or name in PROMETHEUS_SERIES:
        return True
    base = re.sub(r"_(bucket|count|sum|total)$", "", name)
    return base in exposed


async def test_every_panel_and_alert_names_metrics_the_web_exposes(
    client: AsyncTestClient[Litestar], settings_env: Any
) -> None:
    settings_env(DATABASE_CPUS="2")  # db_cpus is exported once the plan's CPUs are known
    await client.get("/healthz")  # request metrics get their first samples
    exposed = exposed_names((await client.get("/metrics")).text)
    used = {(file, title, name) for file, title, expr in panel_expressions() for name in metric_names(expr)}
    used |= {("alerts.yml", rule["alert"], name) for rule in alert_rules() for name in metric_names(rule["expr"])}
    unknown = sorted(entry for entry in used if not _known(entry[2], exposed))
    assert unknown == []
    assert len({name for _, _, name in used}) > 20  # the tokenizer found the names


# ------------------------------------------------------------------------------------------ database CPU proxy


async def test_the_cpu_proxy_counts_backends_running_and_not_those_waiting(
    client: AsyncTestClient[Litestar], db: Any, settings_env: Any
) -> None:
    """`db_backends_on_cpu` (DbCpuBusy's numerator): a backend computing counts, one sleeping does not."""
    import asyncio
    import contextlib

    import asyncpg

    from tests.conftest import TEST_DATABASE_URL
    from tests.integration.test_observability import sample_value

    settings_env(DATABASE_CPUS="0.5")
    pids: list[int] = []
    busy, sleeping = await asyncpg.connect(TEST_DATABASE_URL), await asyncpg.connect(TEST_DATABASE_URL)
    try:
        await busy.execute("SET statement_timeout = '20s'")
        burn = asyncio.create_task(busy.fetchval("SELECT count(*) FROM generate_series(1, 1000000000)"))
        nap = asyncio.create_task(sleeping.execute("SELECT pg_sleep(20)"))
        ours = "SELECT pid, state, wait_event FROM pg_stat_activity WHERE pid = ANY($1::int[])"
        pids += [busy.get_server_pid(), sleeping.get_server_pid()]
        for _ in range(100):  # both statements started, the sleep already sleeping
            rows = {r["pid"]: r for r in await db.fetch(ours, pids)}
            if all(rows[pid]["state"] == "active" for pid in pids) and rows[pids[1]]["wait_event"]:
                break
            await asyncio.sleep(0.05)
        assert rows[pids[0]]["wait_event"] is None  # computing: what the proxy counts
        assert rows[pids[1]]["wait_event"] == "PgSleep"  # waiting: not counted
        text = (await client.get("/metrics")).text
        assert (sample_value(text, "db_backends_on_cpu") or 0) >= 1
        assert sample_value(text, "db_cpus") == 0.5
    finally:
        await db.execute("SELECT pg_cancel_backend(pid) FROM unnest($1::int[]) AS pid", pids)
        for task in (burn, nap):
            with contextlib.suppress(asyncpg.QueryCanceledError):
                await task
        await busy.close()
        await sleeping.close()

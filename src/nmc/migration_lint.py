"""`nmc db lint-migrations` (run by `just migration-check`): migrations stay additive (runbook §4.3).

A migration whose `upgrade()` drops or rewrites a column or table — `op.drop_table`, `op.drop_column`,
`op.rename_table`, `op.alter_column` with `type_=` or `new_column_name=`, or SQL with DROP TABLE,
DROP COLUMN, ALTER COLUMN … TYPE, RENAME, TRUNCATE — fails the check unless its `upgrade()` carries an
explicit marker comment saying why it is safe:

    # migration-check: destructive-ok <why: e.g. the column is unused since v2026.12.01-1>

`downgrade()` may drop what `upgrade()` created: it is not checked.

An index built on an existing large or hot table (`LARGE_TABLES`) must not lock it for the build: a plain
CREATE INDEX blocks every write to the table (each missed call, text, webhook) until it ends. It must be
built CONCURRENTLY outside the migration's transaction —

    with op.get_context().autocommit_block():
        op.create_index("ix_…", "conv_messages", [...], postgresql_concurrently=True)

(or `op.execute("CREATE INDEX CONCURRENTLY …")` in that block) — unless the table is created by the same
migration (it is empty), or the call carries, on its lines or the line above, a marker saying why:

    # migration-check: blocking-index-ok <why: e.g. the table has a few hundred rows>

The same holds for `op.create_unique_constraint` and `op.create_primary_key` (each builds an index).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"#\s*migration-check:\s*destructive-ok\s+\S")
INDEX_MARKER = re.compile(r"#\s*migration-check:\s*blocking-index-ok\s+\S")
# Tables that grow with every call, text, webhook, event or synced calendar entry, or that the first-SMS
# path writes on every missed call: an index build that blocks their writes stalls the product.
LARGE_TABLES = frozenset(
    {
        "outbox_events",
        "webhook_events",
        "pgqueuer",
        "conv_calls",
        "conv_messages",
        "conv_threads",
        "conv_early_statuses",
        "conv_kpi_facts",
        "conv_opt_out_events",
        "sched_bookings",
        "sched_holds",
        "sched_busy_blocks",
        "calendar_event_links",
        "billing_usage",
    }
)
_INDEX_OPS = {"create_index": 1, "create_unique_constraint": 1, "create_primary_key": 1}  # op -> table arg
_SQL_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:\S+\s+)?ON\s+(?:ONLY\s+)?"
    r"([\w.\"]+)",
    re.IGNORECASE,
)
_OPS = {"drop_table", "drop_column", "rename_table"}
_ALTER_REWRITES = {"type_", "new_column_name"}
_SQL = re.compile(
    r"\b(DROP\s+TABLE|DROP\s+COLUMN|ALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE|RENAME\s+(COLUMN\s+|TO\s+)|TRUNCATE)\b",
    re.IGNORECASE,
)
# Revisions reviewed before this check existed (each a catalog-only change in Postgres).
REVIEWED = {
    "a10000000001": "caller columns varchar(20) -> varchar(255): widening a varchar rewrites nothing",
}
# Blocking index builds on large tables reviewed before the index check existed: (revision, index) -> why.
# Both migrations were written and applied before the first release tag (production had never run):
# the tables had no production rows, so the builds blocked nothing.
_BEFORE_THE_FIRST_RELEASE = "applied before the first release: no production rows in the table yet"
REVIEWED_INDEXES = {
    ("22724da3755b", "uq_webhook_events_provider_token"): _BEFORE_THE_FIRST_RELEASE,
    **{
        ("1b0c00000002", name): _BEFORE_THE_FIRST_RELEASE
        for name in (
            "uq_conv_threads_current_per_caller",
            "ix_conv_threads_tenant_activity_id",
            "ix_conv_threads_tenant_status_activity_id",
            "ix_conv_threads_tenant_unread_activity_id",
            "ix_conv_threads_follow_up_due",
        )
    },
}


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str
    kind: str = "destructive"  # or "blocking-index"

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.what}"


def _string_constants(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _revision(tree: ast.Module) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "revision" for t in node.targets):
            value = node.value
            return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None
    return None


def check_file(path: Path) -> list[Finding]:
    source = path.read_text()
    tree = ast.parse(source)
    revision = _revision(tree)
    upgrade = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None)
    if upgrade is None:
        return []
    lines = source.splitlines()
    findings = [] if revision in REVIEWED else _destructive(path, upgrade, lines)
    return findings + _blocking_indexes(path, revision, upgrade, lines)


def _destructive(path: Path, upgrade: ast.FunctionDef, lines: list[str]) -> list[Finding]:
    body = "\n".join(lines[upgrade.lineno - 1 : upgrade.end_lineno])  # whole lines: comments too
    if MARKER.search(body):
        return []
    findings = []
    for node in ast.walk(upgrade):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        if name in _OPS:
            findings.append(Finding(path, node.lineno, f"op.{name}"))
        elif name == "alter_column" and {k.arg for k in node.keywords} & _ALTER_REWRITES:
            findings.append(Finding(path, node.lineno, "op.alter_column rewrites a column (type_/new_column_name)"))
        elif name in {"execute", "execute_script"} or (isinstance(node.func.value, ast.Name) and name == "text"):
            for value in _string_constants(node):
                if match := _SQL.search(value):
                    findings.append(Finding(path, node.lineno, f"SQL {match.group(1).upper()}"))
    return findings


def _argument(call: ast.Call, position: int, keyword: str) -> str | None:
    """A string argument given by position or keyword (None when it is not a literal)."""
    node = call.args[position] if len(call.args) > position else None
    node = next((k.value for k in call.keywords if k.arg == keyword), node)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _in_autocommit_block(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.With | ast.AsyncWith) and any(
            isinstance(item.context_expr, ast.Call)
            and isinstance(item.context_expr.func, ast.Attribute)
            and item.context_expr.func.attr == "autocommit_block"
            for item in node.items
        ):
            return True
    return False


def _marked(call: ast.Call, lines: list[str]) -> bool:
    """The blocking-index marker on the call's own lines or on the line above it."""
    span = lines[max(call.lineno - 2, 0) : call.end_lineno]
    return any(INDEX_MARKER.search(line) for line in span)


def _blocking_indexes(path: Path, revision: str | None, upgrade: ast.FunctionDef, lines: list[str]) -> list[Finding]:
    calls = [n for n in ast.walk(upgrade) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    created = {_argument(c, 0, "table_name") for c in calls if c.func.attr == "create_table"}  # type: ignore[attr-defined]
    parents = {child: parent for parent in ast.walk(upgrade) for child in ast.iter_child_nodes(parent)}
    findings = []
    for call in calls:
        name = call.func.attr  # type: ignore[attr-defined]
        builds: list[tuple[str | None, str | None, bool]] = []  # (index, table, concurrently)
        if name in _INDEX_OPS:
            concurrently = any(
                k.arg == "postgresql_concurrently" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in call.keywords
            )
            builds.append((_argument(call, 0, "index_name"), _argument(call, 1, "table_name"), concurrently))
        elif name in {"execute", "execute_script"} or (isinstance(call.func.value, ast.Name) and name == "text"):  # type: ignore[attr-defined]
            for value in _string_constants(call):
                for match in _SQL_INDEX.finditer(value):
                    table = match.group(2).replace('"', "").rsplit(".", 1)[-1]
                    builds.append((None, table, bool(match.group(1))))
        for index, table, concurrently in builds:
            if table not in LARGE_TABLES or table in created or _marked(call, lines):
                continue
            if (revision, index) in REVIEWED_INDEXES:
                continue
            where = f"{index or 'an index'} on {table}"
            if not concurrently:
                findings.append(Finding(path, call.lineno, f"{where} without CONCURRENTLY", "blocking-index"))
            elif not _in_autocommit_block(call, parents):
                findings.append(
                    Finding(
                        path,
                        call.lineno,
                        f"{where}: CONCURRENTLY outside op.get_context().autocommit_block()",
                        "blocking-index",
                    )
                )
    return findings


def check(versions: Path) -> list[Finding]:
    return [finding for path in sorted(versions.glob("*.py")) for finding in check_file(path)]

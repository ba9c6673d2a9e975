"""`nmc db lint-migrations` (run by `just migration-check`): migrations stay additive (runbook §4.3).

A migration whose `upgrade()` drops or rewrites a column or table — `op.drop_table`, `op.drop_column`,
`op.rename_table`, `op.alter_column` with `type_=` or `new_column_name=`, or SQL with DROP TABLE,
DROP COLUMN, ALTER COLUMN … TYPE, RENAME, TRUNCATE — fails the check unless its `upgrade()` carries an
explicit marker comment saying why it is safe:

    # migration-check: destructive-ok <why: e.g. the column is unused since v2026.12.01-1>

`downgrade()` may drop what `upgrade()` created: it is not checked.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

MARKER = re.compile(r"#\s*migration-check:\s*destructive-ok\s+\S")
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


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.what}"


def _string_constants(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def check_file(path: Path) -> list[Finding]:
    source = path.read_text()
    tree = ast.parse(source)
    revision = next(
        (
            node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "revision" for t in node.targets)
            and isinstance(node.value, ast.Constant)
        ),
        None,
    )
    if revision in REVIEWED:
        return []
    upgrade = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None)
    if upgrade is None:
        return []
    body = "\n".join(source.splitlines()[upgrade.lineno - 1 : upgrade.end_lineno])  # whole lines: comments too
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


def check(versions: Path) -> list[Finding]:
    return [finding for path in sorted(versions.glob("*.py")) for finding in check_file(path)]

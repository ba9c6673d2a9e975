"""Operators' commands of issue #13 (registered on the `nmc` command by `cli.py`): runbook actions as
commands — park a poison event, run retention now, the restore drill, the kill switch."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar
from uuid import UUID

import click

T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def with_cleanup() -> T:
        from nmc.db import dispose_engine

        try:
            return await coroutine
        finally:
            await dispose_engine()

    return asyncio.run(with_cleanup())


@click.command("park")
@click.argument("event_id")
@click.option("--reason", required=True, help="Why (goes into last_error; open a bug with it).")
def park_command(event_id: str, reason: str) -> None:
    """Move one outbox event to outbox_events_errors by hand (runbook §7.2 step 4)."""
    from nmc.events import ParkRefused, park

    try:
        parked = _run(park(UUID(event_id), reason))
    except ValueError:
        raise click.ClickException(f"not an event id: {event_id!r}") from None
    except ParkRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(parked.line())
    click.echo(f"replay it once fixed: just replay-outbox --event-id {parked.event_id}")


@click.group("retention")
def retention() -> None:
    """Retention deletes of runbook §8 (daily at 03:15 UTC in the jobs process)."""


@retention.command("run")
def retention_run() -> None:
    """Run the retention deletes now, in this process, and print what each table lost."""
    from jobs.retention import RULES, purge_expired

    counts = purge_expired()
    for table, condition in RULES:
        click.echo(f"{table}: {counts[table]} rows deleted ({condition})")


@click.command("lint-migrations")
@click.option("--versions", type=click.Path(file_okay=False, exists=True), default=None, help="Default: db/versions.")
def lint_migrations(versions: str | None) -> None:
    """Fail on a migration that drops or rewrites a column or table without the explicit marker."""
    from pathlib import Path

    from nmc.db import MIGRATIONS_DIR
    from nmc.migration_lint import check

    findings = check(Path(versions) if versions else MIGRATIONS_DIR / "versions")
    for finding in findings:
        click.echo(f"destructive: {finding}", err=True)
    if findings:
        raise click.ClickException(
            "migrations must stay additive (runbook §4.3); if this one is safe, say why in its upgrade(): "
            "# migration-check: destructive-ok <why>"
        )
    click.echo("migrations: additive (or marked)")


@click.command("restore-drill")
@click.argument("source")
@click.option("--server", default=None, help="Where the scratch database goes (default: DATABASE_URL's server).")
@click.option("--keep", is_flag=True, help="Keep the scratch database afterwards.")
def restore_drill(source: str, server: str | None, keep: bool) -> None:
    """Restore SOURCE (a database URL or a pg_dump/Render backup file) into a scratch database, migrate it,
    run the smoke test, print the restore time and the newest event (RPO), drop it (runbook §8, §9)."""
    from nmc.restore_drill import DrillFailed, run_drill, server_of
    from nmc.settings import get_settings

    try:
        report = run_drill(source, server=server or server_of(get_settings().DATABASE_URL), keep=keep, echo=click.echo)
    except DrillFailed as exc:
        raise click.ClickException(f"restore drill failed: {exc}") from None
    for line in report.lines():
        click.echo(line)


COMMANDS: list[click.Command] = [park_command, retention, restore_drill]
DB_COMMANDS: list[click.Command] = [lint_migrations]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
    database = group.commands["db"]
    assert isinstance(database, click.Group)
    for command in DB_COMMANDS:
        database.add_command(command)

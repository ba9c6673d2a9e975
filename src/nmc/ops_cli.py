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


COMMANDS: list[click.Command] = [park_command, retention]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)

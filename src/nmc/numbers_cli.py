"""Numbers' operator commands (registered on the `nmc` command by `cli.py`, issue #15):
`nmc numbers sync-webhooks [--tenant ID | --all] [--dry-run]` (`just numbers-sync`)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import click


@click.group("numbers")
def numbers() -> None:
    """Tenants' Twilio numbers."""


async def _sync(tenant_id: UUID | None, whole_account: bool, dry_run: bool) -> list[Any]:
    from nmc.db import dispose_engine, raw_connection, session_scope
    from nmc.telephony import sync_webhooks

    try:
        async with session_scope() as session:
            return await sync_webhooks(
                await raw_connection(session), tenant_id=tenant_id, whole_account=whole_account, dry_run=dry_run
            )
    finally:
        await dispose_engine()


@numbers.command("sync-webhooks")
@click.option("--tenant", "tenant", default=None, help="Only this tenant's numbers (its id).")
@click.option(
    "--all",
    "whole_account",
    is_flag=True,
    help="Also every number in the Twilio account tagged nmc:<tenant> that no tenant stores (a purchase whose "
    "commit failed).",
)
@click.option("--dry-run", is_flag=True, help="Print the drift, change nothing.")
def sync_webhooks_command(tenant: str | None, whole_account: bool, dry_run: bool) -> None:
    """Check every number's voice, status and SMS URLs at Twilio against PUBLIC_BASE_URL and fix drift,
    printing what changed (after PUBLIC_BASE_URL moved, or a number edited in Twilio's console)."""
    from nmc.problems import DomainError
    from nmc.settings import get_settings

    tenant_id = None
    if tenant is not None:
        try:
            tenant_id = UUID(tenant)
        except ValueError:
            raise click.BadParameter(f"not a tenant id: {tenant!r}", param_hint="--tenant") from None
    try:
        results = asyncio.run(_sync(tenant_id, whole_account, dry_run))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    changed = 0
    for result in results:
        where = f"{result.number} ({result.sid or 'no sid'}, tenant {result.tenant_id or '-'})"
        if result.note and not result.changes:
            click.echo(f"{where}: {result.note}")
            continue
        if not result.changes:
            click.echo(f"{where}: ok")
            continue
        changed += 1
        verb = "would change" if dry_run else "changed"
        note = f" [{result.note}]" if result.note else ""
        for name, (now, wanted) in sorted(result.changes.items()):
            click.echo(f"{where}{note}: {verb} {name}: {now or '(none)'} -> {wanted}")
    base = get_settings().PUBLIC_BASE_URL
    verb = "with drift" if dry_run else "fixed"
    click.echo(f"{len(results)} number(s) checked against {base}, {changed} {verb}")


def register(cli: click.Group) -> None:
    cli.add_command(numbers)

"""`nmc calendars …` (registered on the `nmc` command by `cli.py`): a sync now, printing what changed
(`just calendars-sync`), and re-encrypting stored tokens after a SECRET_KEY rotation."""

from __future__ import annotations

from uuid import UUID

import click

from nmc.db import run_and_dispose


@click.group("calendars")
def calendars() -> None:
    """Calendar connections (Google, Jobber): sync now, rotate stored tokens, connect a Jobber token."""


@calendars.command("sync")
@click.option("--connection", "connection_id", default=None, help="One connection's id.")
@click.option("--tenant", "tenant_id", default=None, help="Every connection of one tenant.")
@click.option("--all", "everything", is_flag=True, help="Every connection.")
@click.option("--full", is_flag=True, help="A full sync (replace the blocks) instead of an incremental one.")
def sync(connection_id: str | None, tenant_id: str | None, everything: bool, full: bool) -> None:
    """Sync now, in this process (past any backoff), and print what changed."""
    from nmc.calendars import sync_now

    if sum(bool(x) for x in (connection_id, tenant_id, everything)) != 1:
        raise click.ClickException("say which: --connection ID, --tenant ID or --all")
    try:
        reports = run_and_dispose(
            sync_now(
                connection_id=UUID(connection_id) if connection_id else None,
                tenant_id=UUID(tenant_id) if tenant_id else None,
                everything=everything,
                full=full,
            )
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not reports:
        click.echo("no calendar connections")
    for report in reports:
        click.echo(report.line())
    if any(report.outcome not in ("synced", "skipped") for report in reports):
        raise SystemExit(1)


@calendars.command("rotate-tokens")
def rotate_tokens() -> None:
    """Re-encrypt every stored token under SECRET_KEY (set SECRET_KEY_PREVIOUS to the old key first)."""
    from nmc.calendars import rotate_tokens as rotate

    rotated, unreadable = run_and_dispose(rotate())
    click.echo(f"tokens re-encrypted: {rotated}; unreadable (reconnect those): {unreadable}")
    if unreadable:
        raise SystemExit(1)


@calendars.command("connect-jobber-token")
@click.argument("tenant_id")
@click.argument("resource_id")
def connect_jobber_token(tenant_id: str, resource_id: str) -> None:
    """A business's personal Jobber token (JOBBER_API_TOKEN) as the tenant's Jobber connection, without OAuth
    (listed under RESOURCE_ID; map its users with PATCH /api/calendars/{id}/jobber-users)."""
    from nmc.calendars import connect_jobber_token as connect
    from nmc.settings import get_settings

    try:
        outcome = run_and_dispose(connect(UUID(tenant_id), UUID(resource_id), get_settings().JOBBER_API_TOKEN))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if outcome.connection_id is None:
        raise click.ClickException(f"not connected: {outcome.outcome} ({outcome.detail})")
    click.echo(f"connected: {outcome.connection_id} (a full sync is queued)")


def register(cli: click.Group) -> None:
    cli.add_command(calendars)

"""Billing's operator commands (registered on the `nmc` command by `cli.py`, issue #12):
`nmc billing reconcile [--since T]` (`just billing-reconcile`) and `nmc billing tick` (what the jobs
process runs every minute: lapsed entitlements recorded, usage reported to Stripe)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from nmc.db import run_and_dispose


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO date or time: {value!r}", param_hint="--since") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.group("billing")
def billing() -> None:
    """Stripe billing: reconcile with Stripe, run the periodic tick."""


@billing.command("reconcile")
@click.option("--since", default=None, help="ISO date or time (UTC unless it says): Stripe's events from then on. "
              "Default: the 30 days Stripe keeps.")  # fmt: skip
def reconcile_command(since: str | None) -> None:
    """Apply Stripe's events we missed and each customer's current subscription (idempotent)."""
    from nmc.billing import reconcile
    from nmc.problems import DomainError

    try:
        report = run_and_dispose(reconcile(_since(since)))
    except DomainError as exc:
        raise click.ClickException(exc.detail) from None
    click.echo(report.summary())
    if report.errors:
        raise SystemExit(1)


@billing.command("tick")
def tick_command() -> None:
    """Record lapsed entitlements and report metered usage now (the jobs process does it every minute)."""
    from nmc.billing import billing_tick

    click.echo(json.dumps(run_and_dispose(billing_tick()), default=str))


def register(cli: click.Group) -> None:
    cli.add_command(billing)

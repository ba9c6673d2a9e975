"""The `nmc` command: processes, database, tenants, outbox replay, ops SQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import click
import msgspec

from nmc.settings import SettingsError, get_settings

if TYPE_CHECKING:
    from litestar import Litestar
    from sqlalchemy.ext.asyncio import AsyncSession

    from nmc.events import ReplayFilter

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _check_settings() -> None:
    """Fail fast, in one line naming the variable, before anything starts."""
    get_settings.cache_clear()
    get_settings()


@click.group()
def cli() -> None:
    """NeverMissCall: text back every missed call, carry the conversation, book the job."""
    _check_settings()


# ---------------------------------------------------------------------------- processes
@cli.command()
@click.option("--port", type=int, default=None, help="Defaults to PORT.")
@click.option("--host", default="0.0.0.0", show_default=True)
def web(port: int | None, host: str) -> None:
    """Run the web process (webhooks, REST, /healthz, /metrics)."""
    import uvicorn

    from nmc.capacity import check_connection_budget
    from nmc.observability.logging import configure_logging

    settings = get_settings()
    check_connection_budget("web", settings)
    configure_logging(settings.LOG_LEVEL)
    # log_config=None: uvicorn installs no formatter of its own; its records reach our root handler.
    # access_log=False: the correlation middleware's `http.request` line is the access log.
    # workers: uvicorn's own supervisor (one listening socket, WEB_CONCURRENCY processes, a dead one
    # replaced); every figure /metrics serves is read from Postgres, so any process answers for all.
    uvicorn.run(
        "nmc.cli:served_app",
        factory=True,
        host=host,
        port=port or settings.PORT,
        workers=settings.WEB_CONCURRENCY,
        access_log=False,
        log_config=None,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        forwarded_allow_ips="*",
    )


def served_app() -> Litestar:
    """The app as `nmc web` serves it: its start-up heap frozen once it has started."""
    from nmc.app import create_app
    from nmc.runtime import freeze_startup_heap

    app = create_app()
    app.on_startup.append(freeze_startup_heap)
    return app


@cli.command()
def worker() -> None:
    """Run the worker process (outbox dispatcher, sweeper, schedules); WORKER_PROCESSES of them, supervised."""
    from nmc.capacity import check_connection_budget
    from nmc.observability.logging import configure_logging

    settings = get_settings()
    check_connection_budget("worker", settings)
    configure_logging(settings.LOG_LEVEL)
    if settings.WORKER_PROCESSES == 1:
        serve_worker()
        return
    from nmc.supervisor import Supervisor

    sys.exit(Supervisor(settings.WORKER_PROCESSES, serve_worker).run())


def serve_worker() -> None:
    """One worker process: wait for the schema, then run until SIGTERM/SIGINT."""
    import uvloop

    from nmc.schema_gate import wait_for_schema
    from nmc.worker import run_worker

    run_async(wait_for_schema("worker"))  # the schema behind this code: wait for the deploy's migrations
    uvloop.run(run_worker())


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("dramatiq_args", nargs=-1, type=click.UNPROCESSED)
def jobs(dramatiq_args: tuple[str, ...]) -> None:
    """Run the jobs process (`dramatiq jobs`), logging through our pipeline."""
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from nmc.observability.logging import configure_logging

    # Dramatiq's main process writes its workers' output to stderr, so its own lines go there too.
    # --skip-logging: no basicConfig of Dramatiq's in either; `jobs` configures the workers' logging.
    configure_logging(get_settings().LOG_LEVEL, stream=sys.stderr)
    from nmc.schema_gate import wait_for_schema

    run_async(wait_for_schema("jobs"))  # the schema behind this code: wait for the deploy's migrations
    args = make_argument_parser().parse_args(["jobs", "--processes", "1", "--skip-logging", *dramatiq_args])
    sys.exit(dramatiq_main(args))


@cli.command()
def dev() -> None:
    """Database ready, migrations applied, then web + worker + jobs in this terminal (Ctrl-C stops all)."""
    from nmc.devdb import resolve_dev_database_url

    env = dict(os.environ)
    env["DATABASE_URL"] = resolve_dev_database_url(env)
    _prepare_database(env)
    commands = {"web": ["web"], "worker": ["worker"], "jobs": ["jobs"]}
    children = {
        name: subprocess.Popen([sys.executable, "-m", "nmc", *args], env=env) for name, args in commands.items()
    }
    click.echo(f"nmc dev: web on :{get_settings().PORT}, worker and jobs running; Ctrl-C stops all three")
    _supervise(children)


def _prepare_database(env: dict[str, str]) -> None:
    for args in (["db", "ensure"], ["db", "upgrade"]):
        subprocess.run([sys.executable, "-m", "nmc", *args], env=env, check=True)


def _supervise(children: dict[str, subprocess.Popen[bytes]]) -> None:
    def stop_all(*_: object) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.3)
    finally:
        stop_all()
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
    exited = [f"{name} ({child.returncode})" for name, child in children.items()]
    click.echo(f"nmc dev: stopped {', '.join(exited)}")


# ---------------------------------------------------------------------------- database
@cli.group()
def db() -> None:
    """Database: create, migrate, check."""


def _alembic() -> Any:
    from advanced_alchemy.alembic.commands import AlembicCommands

    from nmc.db import get_alchemy_config

    return AlembicCommands(sqlalchemy_config=get_alchemy_config())


@db.command()
def ensure() -> None:
    """Create the database named by DATABASE_URL if it is missing."""
    from nmc.devdb import DevDatabaseError, ensure_database

    try:
        created = run_async(ensure_database(get_settings().DATABASE_URL))
    except DevDatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("database created" if created else "database exists")


@db.command()
@click.option("--sql", is_flag=True, help="Print the SQL instead of applying it (offline).")
@click.option("--revision", default="heads", show_default=True)
def upgrade(sql: bool, revision: str) -> None:
    """Apply migrations."""
    _alembic().upgrade(revision=revision, sql=sql)


@db.command()
@click.option("--revision", default="-1", show_default=True)
def downgrade(revision: str) -> None:
    """Revert migrations (only for additive ones; runbook §7.7)."""
    _alembic().downgrade(revision=revision)


@db.command()
def check() -> None:
    """Fail if the models and the migrated database differ (autogenerate drift)."""
    _alembic().check()


@db.command()
@click.option("-m", "--message", required=True)
@click.option("--head", default="head", show_default=True, help="The revision to build on (with several heads).")
def revision(message: str, head: str) -> None:
    """Autogenerate a migration from the models."""
    _alembic().revision(message=message, autogenerate=True, head=head)


@cli.command()
@click.argument("name")
def sql(name: str) -> None:
    """Run db/queries/NAME.sql (the runbook's ops queries) and print the rows."""
    from nmc.ops import run_named_query

    try:
        rows = run_async(run_named_query(name))
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(rows, default=str, indent=2))


# ---------------------------------------------------------------------------- tenants
@cli.group()
def tenants() -> None:
    """Tenants (businesses) and their numbers."""


@tenants.command("create")
@click.option("--name", required=True)
@click.option("--number", required=True, help="The tenant's Twilio number, E.164.")
@click.option("--forward-to", required=True, help="Where calls ring first, E.164.")
@click.option("--timezone", default="America/New_York", show_default=True)
@click.option("--clerk-org", default=None, help="Clerk organization id of the tenant's team.")
def tenants_create(name: str, number: str, forward_to: str, timezone: str, clerk_org: str | None) -> None:
    """Create a tenant and print it as JSON."""
    from nmc.identity import TenantCreate, create_tenant
    from nmc.problems import DomainError

    try:
        data = msgspec.convert(
            {
                "name": name,
                "twilio_number": number,
                "forwarding_number": forward_to,
                "timezone": timezone,
                "clerk_org_id": clerk_org,
            },
            TenantCreate,
        )
        tenant = run_async(create_tenant(data))
    except (msgspec.ValidationError, ValueError, DomainError) as exc:
        raise click.ClickException(_cli_message(exc)) from None
    click.echo(msgspec.json.encode(tenant).decode())


def _cli_message(exc: Exception) -> str:
    from nmc.problems import DomainError

    text = exc.detail if isinstance(exc, DomainError) else str(exc)
    for option, field in (("--number", "twilio_number"), ("--forward-to", "forwarding_number")):
        text = text.replace(f"$.{field}", option)
    return text


@tenants.command("list")
def tenants_list() -> None:
    """Print every tenant as JSON lines."""
    from nmc.identity import list_tenants

    for tenant in run_async(list_tenants()):
        click.echo(msgspec.json.encode(tenant).decode())


# ---------------------------------------------------------------------------- events
@cli.command()
@click.option("--output", type=click.Path(dir_okay=False), default=None)
def catalog(output: str | None) -> None:
    """Export every event's JSON Schema."""
    from nmc.events import json_schemas

    text = json.dumps(json_schemas(), indent=2, sort_keys=True)
    if output:
        Path(output).write_text(text + "\n")
    else:
        click.echo(text)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@cli.command("replay-outbox")
@click.option("--event-id", "event_ids", multiple=True, help="Repeatable.")
@click.option("--event-name", default=None)
@click.option("--since", default=None, help="ISO time: parked events created at or after.")
@click.option("--until", default=None, help="ISO time: parked events created before.")
@click.option("--dry-run", is_flag=True, help="List what would be replayed; change nothing.")
def replay_outbox(
    event_ids: tuple[str, ...], event_name: str | None, since: str | None, until: str | None, dry_run: bool
) -> None:
    """Move parked events from outbox_events_errors back to the outbox and dispatch them again.

    Their texts that failed before Twilio had them (not for the recipient's sake) are reopened in the
    same transaction, so they are sent; the report says which texts will be sent and why others will not.
    """
    from nmc.events import ReplayFilter

    if not (event_ids or event_name or since or until):
        raise click.ClickException("say what to replay: --event-id, --event-name and/or --since/--until")
    try:
        selection = ReplayFilter(
            event_ids=[UUID(e) for e in event_ids], event_name=event_name, since=_when(since), until=_when(until)
        )
    except ValueError as exc:
        raise click.ClickException(f"bad filter: {exc}") from None
    for line in run_async(replay_outbox_report(selection, dry_run=dry_run)):
        click.echo(line)


async def replay_outbox_report(selection: ReplayFilter, *, dry_run: bool) -> list[str]:
    """Requeue parked events (events) and reopen their unsent texts (conversations), in one transaction."""
    from nmc.conversations import TextsReplay, reopen_unsent_texts
    from nmc.db import dispose_engine
    from nmc.events import DomainEvent
    from nmc.events import replay_parked as replay

    texts = TextsReplay(dry_run=dry_run)

    async def reopen(session: AsyncSession, events: list[DomainEvent]) -> None:
        nonlocal texts
        texts = await reopen_unsent_texts(session, events, dry_run=dry_run)

    try:
        report = await replay(selection, dry_run=dry_run, before_requeue=reopen)
    finally:
        await dispose_engine()
    return report.lines() + texts.lines()


# ---------------------------------------------------------------------------- telephony
@cli.group()
def simulate() -> None:
    """Synthetic traffic against PUBLIC_BASE_URL (runbook §4.6)."""


@simulate.command("missed-call")
@click.option("--to", "to", required=True, help="A tenant's Twilio number, E.164.")
@click.option("--from", "caller", required=True, help="The caller, E.164.")
@click.option("--timeout", default=15.0, show_default=True, help="Seconds to wait for the first SMS.")
def simulate_missed_call(to: str, caller: str, timeout: float) -> None:
    """Post signed voice webhooks for a missed call and wait for its first SMS."""
    from nmc.telephony import simulate_missed_call as simulate_call

    settings = get_settings()
    result = run_async(
        simulate_call(
            to, caller, base_url=settings.PUBLIC_BASE_URL, auth_token=settings.TWILIO_AUTH_TOKEN, timeout=timeout
        )
    )
    click.echo(json.dumps(result.__dict__))
    if result.webhook_status != 200 or result.latency_ms is None:
        raise click.ClickException(f"no first SMS recorded for {result.call_sid} (status: {result.message_status})")
    click.echo(f"first SMS {result.message_status} in {result.latency_ms:.1f} ms (seen after {result.wall_ms:.0f} ms)")


@cli.group()
def kpis() -> None:
    """The lead-KPI projection (conv_kpi_facts)."""


@kpis.command("rebuild")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Truncate every fact first. Without it, only facts from the oldest event the outbox still holds "
    "(it keeps 30 days) onwards are replaced.",
)
def kpis_rebuild(everything: bool) -> None:
    """Replay the projection from the outbox_events history (idempotent; one transaction)."""
    from nmc.db import dispose_engine
    from nmc.kpis import rebuild

    async def run() -> list[str]:
        try:
            return (await rebuild(everything=everything)).lines()
        finally:
            await dispose_engine()

    for line in run_async(run()):
        click.echo(line)


async def replay_stored_webhook(webhook_event_id: UUID) -> str:
    """A stored delivery of any provider through the webhook pipeline's parse → route → apply."""
    from nmc.billing import STRIPE_WEBHOOKS
    from nmc.calendars import GOOGLE_WEBHOOKS, JOBBER_WEBHOOKS
    from nmc.db import session_scope
    from nmc.identity import CLERK_WEBHOOKS
    from nmc.telephony import TWILIO_WEBHOOKS
    from nmc.webhooks import replay

    handlers = {**TWILIO_WEBHOOKS, **STRIPE_WEBHOOKS, **CLERK_WEBHOOKS, **GOOGLE_WEBHOOKS, **JOBBER_WEBHOOKS}
    async with session_scope() as session:
        return await replay(session, webhook_event_id, handlers)


@cli.command("replay-webhook")
@click.argument("webhook_event_id")
def replay_webhook(webhook_event_id: str) -> None:
    """Re-run a stored webhook_events payload through its handler (dedupe and exactly-once still hold)."""
    try:
        stored_id = UUID(webhook_event_id)
    except ValueError:
        raise click.ClickException(f"not a webhook_events id: {webhook_event_id!r}") from None
    try:
        outcome = run_async(replay_stored_webhook(stored_id))
    except ValueError as exc:  # the pipeline's ReplayRefused (unknown id, no handler, no tenant)
        raise click.ClickException(str(exc)) from None
    click.echo(outcome)


def _register_ops_commands() -> None:
    """Issue #13's runbook actions (`nmc/ops_cli.py`): park, retention run, restore-drill, pause-sms."""
    from nmc.ops_cli import register

    register(cli)


_register_ops_commands()


def _register_billing_commands() -> None:
    """Issue #12's billing commands (`nmc/billing_cli.py`): reconcile with Stripe, the periodic tick."""
    from nmc.billing_cli import register

    register(cli)


_register_billing_commands()


def _register_calendar_commands() -> None:
    """Issue #11's `nmc calendars sync|rotate-tokens` (`nmc/calendars_cli.py`)."""
    from nmc.calendars_cli import register

    register(cli)


_register_calendar_commands()


def _register_numbers_commands() -> None:
    """Issue #15's `nmc numbers sync-webhooks` (`nmc/numbers_cli.py`)."""
    from nmc.numbers_cli import register

    register(cli)


_register_numbers_commands()


def main() -> None:
    try:
        cli(prog_name="nmc")
    except SettingsError as exc:
        click.echo(f"nmc: invalid setting {exc}", err=True)
        sys.exit(2)

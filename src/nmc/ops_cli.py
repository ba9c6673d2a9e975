"""Operators' commands of issue #13 (registered on the `nmc` command by `cli.py`): runbook actions as
commands — park a poison event, run retention now, the restore drill, the kill switch."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

import click

from nmc.db import run_and_dispose

if TYPE_CHECKING:
    from nmc.ops import SmsSendingStatus


@click.command("park")
@click.argument("event_id")
@click.option("--reason", required=True, help="Why (goes into last_error; open a bug with it).")
def park_command(event_id: str, reason: str) -> None:
    """Move one outbox event to outbox_events_errors by hand (runbook §7.2 step 4)."""
    from nmc.events import ParkRefused, park

    try:
        parked = run_and_dispose(park(UUID(event_id), reason))
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
    """Fail on a migration that drops or rewrites a column or table, or builds an index on a large table
    without CONCURRENTLY, unless it carries the explicit marker."""
    from pathlib import Path

    from nmc.db import MIGRATIONS_DIR
    from nmc.migration_lint import check

    findings = check(Path(versions) if versions else MIGRATIONS_DIR / "versions")
    for finding in findings:
        click.echo(f"{finding.kind}: {finding}", err=True)
    hints = {
        "destructive": "migrations must stay additive (runbook §4.3); if this one is safe, say why in its upgrade(): "
        "# migration-check: destructive-ok <why>",
        "blocking-index": "an index on a large table is built with postgresql_concurrently=True inside "
        "`with op.get_context().autocommit_block():` (docs/runbook.md §4); if a blocking build is safe, say why "
        "on the line above the call: # migration-check: blocking-index-ok <why>",
    }
    if findings:
        raise click.ClickException("\n".join(hints[kind] for kind in sorted({f.kind for f in findings})))
    click.echo("migrations: additive, large-table indexes built concurrently (or marked)")


@click.command("restore-drill")
@click.argument("source")
@click.option("--server", default=None, help="Where the scratch database goes (default: DATABASE_URL's server).")
@click.option("--keep", is_flag=True, help="Keep the scratch database afterwards.")
def restore_drill(source: str, server: str | None, keep: bool) -> None:
    """Restore SOURCE (a database URL or a pg_dump/Render backup file) into a scratch database, migrate it,
    run the smoke test, print the restore time and the newest event (RPO), drop it (runbook §8, §9), and
    record the success in DATABASE_URL's database (restore_drill_last_success_timestamp_seconds)."""
    from nmc.restore_drill import DrillFailed, run_drill, server_of
    from nmc.settings import get_settings

    database_url = get_settings().DATABASE_URL  # the operator's database: where the success is recorded
    try:
        report = run_drill(
            source, server=server or server_of(database_url), record_to=database_url, keep=keep, echo=click.echo
        )
    except DrillFailed as exc:
        raise click.ClickException(f"restore drill failed: {exc}") from None
    for line in report.lines():
        click.echo(line)


CIRCUIT_CAUSES = {
    "account": "Twilio refused our credentials or account",
    "unavailable": "Twilio is down (5xx/timeouts); texts go out by themselves once a probe succeeds",
}


def _ago(moment: object) -> str:
    from datetime import UTC, datetime

    if not isinstance(moment, datetime):
        return "-"
    minutes = (datetime.now(UTC) - moment).total_seconds() / 60
    return f"{moment.isoformat(timespec='seconds')} ({minutes:.0f} min ago)"


def status_lines(status: SmsSendingStatus) -> list[str]:
    state, texts = status.state, status.texts
    lines = []
    if state.paused_at is not None:
        lines.append(f"operator pause: PAUSED since {_ago(state.paused_at)} by {state.paused_by}: {state.pause_reason}")
    else:
        lines.append("operator pause: not paused")
    lines.append(
        f"PAUSE_OUTBOUND_SMS in this shell: {str(status.paused_at_start).lower()} "
        "(the worker's own value is in its Render env group; it pauses from the worker's start)"
    )
    if state.circuit_opened_at is not None:
        cause = CIRCUIT_CAUSES[state.circuit_cause or "account"]
        lines.append(
            f"sending circuit: OPEN since {_ago(state.circuit_opened_at)} — {cause} "
            f"({state.circuit_http_status}, code {state.circuit_code}: {state.circuit_reason}); "
            f"next probe at {_ago(state.circuit_probe_at)}"
        )
    else:
        lines.append("sending circuit: closed")
    lines.append(
        f"texts waiting as paused: {texts.waiting} (oldest {_ago(texts.oldest)}); {texts.stale} waited longer than "
        f"PAUSE_MAX_AGE_MINUTES={status.max_age_minutes} and would be suppressed on resume"
    )
    lines.append(f"texts suppressed by resumes so far: {state.suppressed_after_pause}")
    return lines


def _operator() -> str:
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "unknown"


@click.command("pause-sms")
@click.option("--reason", default="", help="Why (shown by --status and on /metrics).")
@click.option("--by", "by", default=None, help="Who (default: user@host).")
@click.option(
    "--status", is_flag=True, help="Show the pause, PAUSE_OUTBOUND_SMS and the sending circuit; change nothing."
)
def pause_sms(reason: str, by: str | None, status: bool) -> None:
    """The kill switch: every worker holds every text from its next decision on (no restart)."""
    from nmc import ops

    if status:
        for line in status_lines(run_and_dispose(ops.sms_sending_status())):
            click.echo(line)
        return
    if not reason.strip():
        raise click.ClickException('say why: just pause-sms --reason "Twilio 5xx flood"')
    since = run_and_dispose(ops.pause_sms(by or _operator(), reason.strip()))
    click.echo(f"outbound SMS paused (since {_ago(since)}): texts wait as paused; `just resume-sms` resumes")


@click.command("resume-sms")
@click.option("--yes", is_flag=True, help="Resume without asking (after reading the counts).")
def resume_sms(yes: bool) -> None:
    """End the operator's pause: texts that waited longer than PAUSE_MAX_AGE_MINUTES are suppressed
    (`paused_too_long`, counted), the others are sent at once. Shows how many of each first."""
    from nmc import ops

    status = run_and_dispose(ops.sms_sending_status())
    for line in status_lines(status):
        click.echo(line)
    if not yes:
        click.confirm("resume sending?", abort=True)
    try:
        resumed = run_and_dispose(ops.resume_sms())
    except ops.NotPaused:
        raise click.ClickException("sending was not paused by an operator (see just pause-sms --status)") from None
    click.echo(
        f"outbound SMS resumed: {resumed.suppressed} texts suppressed (waited over {status.max_age_minutes} min, "
        f"reason paused_too_long); {resumed.released} waiting events released now"
    )


COMMANDS: list[click.Command] = [park_command, retention, restore_drill, pause_sms, resume_sms]
DB_COMMANDS: list[click.Command] = [lint_migrations]


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
    database = group.commands["db"]
    assert isinstance(database, click.Group)
    for command in DB_COMMANDS:
        database.add_command(command)

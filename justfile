# NeverMissCall recipes. Prerequisite on a new machine: `pip install uv rust-just`.
set dotenv-load := false

default:
    @just --list

# Sync the virtual environment from uv.lock (dev tools included).
install:
    uv sync --frozen

# Database ready (created, or a private cluster), migrations applied, web + worker + jobs together.
dev: install
    uv run nmc dev

# The web process: webhooks, REST under /api, /healthz, /metrics (WEB_CONCURRENCY processes on one port).
web:
    uv run nmc web

# The worker process: outbox dispatcher, sweeper, schedules (PgQueuer; WORKER_PROCESSES of them, supervised).
worker:
    uv run nmc worker

# The jobs process: Dramatiq actors (retention, calendar sync, billing); broker by DRAMATIQ_BROKER_URL.
jobs:
    uv run nmc jobs

# The whole test suite (creates its own databases; starts its own fake providers), in two pytest-xdist
# processes, a test file per process at a time (module-scoped real processes stay in one): about 10 minutes
# here instead of 20. `just test -n 0 …` runs in one process.
test *ARGS: install
    uv run pytest -n 2 --dist loadfile {{ARGS}}

# ruff check, ruff format --check, mypy, the module boundaries (import-linter contracts in pyproject.toml).
lint: install
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy
    uv run lint-imports

# Apply migrations (creates the database first when it is missing).
migrate: install
    uv run nmc db ensure
    uv run nmc db upgrade

# Autogenerate a migration from the models: just make-migration "add calls"
make-migration MESSAGE: install
    uv run nmc db revision -m "{{MESSAGE}}"

# Upgrade head on an empty database, autogenerate shows no drift, offline SQL renders, no unmarked drop/rewrite.
migration-check: install
    #!/usr/bin/env bash
    set -euo pipefail
    base="${DATABASE_URL:-postgresql://127.0.0.1:5432/nmc}"
    export DATABASE_URL="${base%/*}/nmc_migration_check"
    psql "${base%/*}/postgres" -qc 'DROP DATABASE IF EXISTS nmc_migration_check'
    uv run nmc db ensure
    uv run nmc db upgrade
    uv run nmc db check
    uv run nmc db upgrade --sql > /dev/null
    uv run nmc db lint-migrations
    echo "migrations: upgrade head ok, no drift, offline SQL renders, nothing destructive unmarked"

# Benchmarks: just bench first-sms [--rate R --seconds S]
bench NAME *ARGS: install
    uv run python -m tests.bench.{{replace(NAME, "-", "_")}} {{ARGS}}

# The fault suite against the real processes on a private PostgreSQL: just chaos [--short] [--scenario NAME]
chaos *ARGS: install
    uv run python -m tests.chaos {{ARGS}}

# Run db/queries/NAME.sql (runbook §12 cheatsheet and playbook queries).
sql NAME:
    uv run nmc sql {{NAME}}

# Export every event's JSON Schema (the Event Catalog).
catalog:
    uv run nmc catalog

# Move parked events back: just replay-outbox --event-name call.missed [--dry-run]
replay-outbox *ARGS:
    uv run nmc replay-outbox {{ARGS}}

# Replay the lead-KPI projection from the outbox history: just kpis-rebuild [--all]
kpis-rebuild *ARGS:
    uv run nmc kpis rebuild {{ARGS}}

# Stripe's events since T and each customer's subscription, applied where missed (runbook §7.5): just billing-reconcile [--since 2026-12-01]
billing-reconcile *ARGS:
    uv run nmc billing reconcile {{ARGS}}

# Every tenant number's webhook URLs at Twilio checked against PUBLIC_BASE_URL, drift fixed and printed:
# just numbers-sync [--tenant ID] [--all: also tagged numbers no tenant stores] [--dry-run]
numbers-sync *ARGS:
    uv run nmc numbers sync-webhooks {{ARGS}}

# Re-run a stored webhook_events payload through its handler: just replay-webhook <uuid>
replay-webhook ID:
    uv run nmc replay-webhook {{ID}}

# Sync calendars now and print what changed: just calendars-sync --connection ID | --tenant ID | --all [--full]
calendars-sync *ARGS:
    uv run nmc calendars sync {{ARGS}}

# Re-encrypt stored calendar tokens under SECRET_KEY after a rotation (SECRET_KEY_PREVIOUS = the old key).
calendars-rotate-tokens:
    uv run nmc calendars rotate-tokens

# A business's personal Jobber token (JOBBER_API_TOKEN) as its Jobber connection, without OAuth.
calendars-connect-jobber-token TENANT RESOURCE:
    uv run nmc calendars connect-jobber-token {{TENANT}} {{RESOURCE}}

# Runbook §4.6 synthetic test against PUBLIC_BASE_URL: just smoke +1TENANTNUMBER +1CALLER
smoke TO FROM:
    uv run nmc simulate missed-call --to {{TO}} --from {{FROM}}

# ---------------------------------------------------------------- operations (issue #13, docs/runbook.md)

# Move a poison event to outbox_events_errors (runbook §7.2 step 4): just park EVENT_ID --reason "why"
[positional-arguments]
park EVENT_ID *ARGS:
    uv run nmc park "$@"

# Run the retention deletes now (runbook §8) and print what each table lost.
retention-run:
    uv run nmc retention run

# Tail a Render service's logs: just logs web|worker|jobs (Render CLI; RENDER_WEB/RENDER_WORKER/RENDER_JOBS = srv-…)
[positional-arguments]
logs SERVICE="worker":
    @ops/render.sh logs "$@"

# Set a Render service's instance count: just scale worker 2 (Render API; RENDER_API_KEY)
[positional-arguments]
scale SERVICE COUNT:
    @ops/render.sh scale "$@"

# A SQL console on the production database (render psql; RENDER_DB = dpg-…), or on DATABASE_URL with --local.
[positional-arguments]
psql *ARGS:
    @ops/render.sh psql "$@"

# Run the CI-equivalent checks (lint, migration check, tests), then tag vYYYY.MM.DD-N: just release [--dry-run]
release *ARGS:
    uv run python ops/release.py {{ARGS}}

# Deploy a release tag to production (web first: its pre-deploy runs the migrations; then worker and jobs).
[positional-arguments]
deploy TAG:
    @ops/render.sh deploy "$@"

# Restore drill (runbook §8, §9): a database URL or a dump into a scratch database, migrate, smoke test, drop it.
restore-drill SOURCE *ARGS:
    uv run nmc restore-drill {{SOURCE}} {{ARGS}}

# Kill switch at runtime (no restart): just pause-sms --reason "why"; just pause-sms --status shows it and the sending circuit.
[positional-arguments]
pause-sms *ARGS:
    uv run nmc pause-sms "$@"

# End the pause: shows how many texts waited longer than PAUSE_MAX_AGE_MINUTES (suppressed) before resuming.
[positional-arguments]
resume-sms *ARGS:
    uv run nmc resume-sms "$@"

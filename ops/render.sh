#!/usr/bin/env bash
# The Render side of the operator recipes (docs/runbook.md §11): just logs | scale | psql | deploy.
# One place that checks what Render needs — the Render CLI, RENDER_API_KEY, the service ids — and says
# what is missing in one line (exit 2) instead of a stack trace.
#
#   ops/render.sh logs web|worker|jobs          render logs -r <id> --tail
#   ops/render.sh scale web|worker|jobs COUNT   POST $RENDER_API_URL/services/<id>/scale {"numInstances": COUNT}
#   ops/render.sh psql [--local] [ARGS…]        render psql $RENDER_DB [ARGS…]  (--local: psql $DATABASE_URL)
#   ops/render.sh deploy vYYYY.MM.DD-N          render deploys create <id> --commit <tag's commit> --wait, web first
set -euo pipefail

action="${1:-}"
shift || true

die() {
    echo "just $action: $*" >&2
    exit 2
}

need_cli() {
    command -v render >/dev/null 2>&1 || die "the Render CLI (\`render\`) is not installed: https://render.com/docs/cli \
(brew install render); then \`render login\`, or set RENDER_API_KEY"
}

service_id() { # web|worker|jobs -> the service's id (srv-…) from RENDER_WEB / RENDER_WORKER / RENDER_JOBS
    local variable
    case "$1" in
        web) variable=RENDER_WEB ;;
        worker) variable=RENDER_WORKER ;;
        jobs) variable=RENDER_JOBS ;;
        *) die "no service '$1': web, worker or jobs" ;;
    esac
    [ -n "${!variable:-}" ] || die "$variable is not set: the $1 service's id (srv-…; \`render services -o json\` lists them)"
    echo "${!variable}"
}

logs() {
    [ $# -eq 1 ] || die "usage: just logs web|worker|jobs"
    local id
    id="$(service_id "$1")"
    need_cli
    exec render logs -r "$id" --tail
}

scale() {
    [ $# -eq 2 ] || die "usage: just scale web|worker|jobs COUNT"
    [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 100 ] || die "COUNT must be a whole number from 1 to 100, got '$2'"
    local id status
    id="$(service_id "$1")"
    [ -n "${RENDER_API_KEY:-}" ] || die "RENDER_API_KEY is not set: a key from Render → Account settings → API keys"
    command -v curl >/dev/null 2>&1 || die "curl is not installed"
    body="$(mktemp)" # global: the EXIT trap runs after this function returned
    trap 'rm -f "$body"' EXIT
    status="$(curl -sS -o "$body" -w '%{http_code}' -X POST "${RENDER_API_URL:-https://api.render.com/v1}/services/$id/scale" \
        -H "Authorization: Bearer $RENDER_API_KEY" -H "Content-Type: application/json" \
        -d "{\"numInstances\": $2}")" || die "the Render API cannot be reached (${RENDER_API_URL:-https://api.render.com/v1})"
    [[ "$status" == 2* ]] || die "the Render API answered $status: $(head -c 300 "$body")"
    echo "$1: $2 instance(s) requested ($id)"
}

psql_console() {
    if [ "${1:-}" = "--local" ]; then
        shift
        command -v psql >/dev/null 2>&1 || die "psql is not installed (apt-get install postgresql-client)"
        exec psql "${DATABASE_URL:-postgresql://127.0.0.1:5432/nmc}" "$@"
    fi
    [ -n "${RENDER_DB:-}" ] || die "RENDER_DB is not set: the database's id (dpg-…; \`render services -o json\` lists it)"
    need_cli
    exec render psql "$RENDER_DB" "$@"
}

deploy() {
    [ $# -eq 1 ] || die "usage: just deploy vYYYY.MM.DD-N"
    local tag="$1" commit id
    # Production runs release tags only (render.yaml: autoDeploy off; `just release` makes them).
    [[ "$tag" =~ ^v[0-9]{4}\.[0-9]{2}\.[0-9]{2}-[0-9]+$ ]] || die "'$tag' is not a release tag (vYYYY.MM.DD-N, made by just release)"
    commit="$(git rev-parse -q --verify "refs/tags/$tag^{commit}")" || die "no tag $tag here (git fetch --tags?)"
    local ids=()
    for service in web worker jobs; do # web first: its pre-deploy command runs the migrations
        ids+=("$(service_id "$service")")
    done
    need_cli
    for id in "${ids[@]}"; do
        render deploys create "$id" --commit "$commit" --wait --confirm -o text
    done
    echo "deployed $tag ($commit)"
}

case "$action" in
    logs) logs "$@" ;;
    scale) scale "$@" ;;
    psql) psql_console "$@" ;;
    deploy) deploy "$@" ;;
    *) die "usage: ops/render.sh logs|scale|psql|deploy …" ;;
esac

"""`just release`: run the CI-equivalent checks, then tag the commit `vYYYY.MM.DD-N` (runbook §2, §4).

N counts today's releases (UTC) from 1. Refuses a working tree with uncommitted changes (the tag would
not be what was checked), a commit that is already tagged, or any failing check. With a git remote,
the tag is pushed (`--no-push` to keep it local). Production deploys only tags (`just deploy TAG`).

    python ops/release.py [--dry-run] [--no-push] [--check CMD ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from datetime import UTC, datetime

DEFAULT_CHECKS = ("just lint", "just migration-check", "just test")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()


def next_tag(existing: list[str], today: datetime) -> str:
    prefix = today.strftime("v%Y.%m.%d-")
    numbers = [int(m.group(1)) for tag in existing if (m := re.fullmatch(re.escape(prefix) + r"(\d+)", tag))]
    return f"{prefix}{max(numbers, default=0) + 1}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="check and print the tag, create nothing")
    parser.add_argument("--no-push", action="store_true")
    parser.add_argument("--check", action="append", help=f"a check command (default: {', '.join(DEFAULT_CHECKS)})")
    args = parser.parse_args(argv)

    if dirty := git("status", "--porcelain", "--untracked-files=no"):
        print(f"release: uncommitted changes; commit or stash them first:\n{dirty}", file=sys.stderr)
        return 1
    head = git("rev-parse", "HEAD")
    if tagged := [t for t in git("tag", "--points-at", head).split() if t.startswith("v")]:
        print(f"release: {head[:12]} is already released as {tagged[0]}", file=sys.stderr)
        return 1
    for command in args.check or DEFAULT_CHECKS:
        print(f"release: {command}", flush=True)
        if subprocess.run(command, shell=True).returncode != 0:  # noqa: S602 (the operator's own commands)
            print(f"release: `{command}` failed; nothing tagged", file=sys.stderr)
            return 1
    tag = next_tag(git("tag", "--list", "v*").split(), datetime.now(UTC))
    if args.dry_run:
        print(f"release: would tag {head[:12]} as {tag}")
        return 0
    git("tag", "-a", tag, "-m", f"release {tag}", head)
    print(f"release: tagged {head[:12]} as {tag}")
    if git("remote") and not args.no_push:
        git("push", "origin", tag)
        print(f"release: pushed {tag}; deploy it with: just deploy {tag}")
    else:
        print(f"release: deploy it with: just deploy {tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

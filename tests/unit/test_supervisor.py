"""`nmc.supervisor.Supervisor` (WORKER_PROCESSES > 1): a dead child is started again, SIGTERM reaches every
child and each stops gracefully. Real processes: the supervisor runs in a child interpreter of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import PROJECT_ROOT

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from nmc.supervisor import Supervisor

    log = Path(sys.argv[1])

    def child() -> None:
        def stop(*_):
            with log.open("a") as out:
                out.write(f"stopped {os.getpid()}\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        with log.open("a") as out:
            out.write(f"started {os.getpid()}\\n")
        while True:
            time.sleep(0.1)

    sys.exit(Supervisor(2, child).run())
    """
)


def lines(log: Path, word: str) -> list[int]:
    if not log.exists():
        return []
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith(word)]


def wait_until(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_dead_child_is_started_again_and_sigterm_stops_every_child_gracefully(tmp_path: Path) -> None:
    log = tmp_path / "children.log"
    supervisor = subprocess.Popen([sys.executable, "-c", SCRIPT, str(log)], cwd=PROJECT_ROOT)
    try:
        wait_until(lambda: len(lines(log, "started")) == 2)
        first, second = lines(log, "started")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(lines(log, "started")) == 3)  # after the first backoff (0.5 s)
        replacement = lines(log, "started")[2]
        assert replacement not in (first, second)

        supervisor.send_signal(signal.SIGTERM)  # to the supervisor only: it passes it on
        assert supervisor.wait(timeout=30) == 0
        assert sorted(lines(log, "stopped")) == sorted([second, replacement])
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()

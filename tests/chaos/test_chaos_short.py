"""`just chaos --short` inside `just test`: the scenarios the suite must pass every time, against the
real processes on a private PostgreSQL (tests/chaos/environment.py). Each asserts what the table's
row says: no text lost, none duplicated, recovered within 10 s, and the scenario's own checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.environment import ChaosEnv
from tests.chaos.scenarios import SHORT, run_scenario

# The module fixture (a cluster, migrations, four processes) counts against the first test's timeout.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# (scenario, why it fails today): a known failure is xfail(strict), so the test flips when the fix lands.
SHORT_SCENARIOS: list[tuple[str, str | None]] = [
    ("duplicates", None),
    ("forged-signatures", None),
    ("backlog", None),
    ("worker-sigkill", None),
    ("twilio-500", None),
    ("twilio-429", None),
]


@pytest.fixture(scope="module")
def chaos() -> Iterator[ChaosEnv]:
    env = ChaosEnv(workers=2)
    yield env
    env.stop()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=why)) if why else name
        for name, why in SHORT_SCENARIOS
    ],
)
def test_fault_scenario_short(chaos: ChaosEnv, name: str) -> None:
    row = run_scenario(chaos, name, SHORT)
    line = " | ".join(str(cell) for cell in row.cells().values())
    assert row.lost == 0, line
    assert row.duplicated == 0, line
    assert row.recovered_in_time, line
    assert not row.failures, line

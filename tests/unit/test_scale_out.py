"""Issue #16's settings: processes per instance, the connection budget, the Dramatiq broker's URL."""

from __future__ import annotations

import pytest

from nmc.capacity import check_connection_budget, web_process_connections, worker_process_connections
from nmc.queue.dramatiq import broker_kind
from nmc.settings import SettingsError, load_settings
from tests.conftest import run_nmc


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "two"),
        ("WORKER_PROCESSES", "-1"),
        ("WORKER_PROCESSES", "1.5"),
        ("DB_CONNECTION_BUDGET", "0"),
        ("DRAMATIQ_BROKER_URL", "kafka://localhost:9092"),
        ("DRAMATIQ_BROKER_URL", "localhost:5672"),
        ("DRAMATIQ_BROKER_URL", "amqp://"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({name: value})
    assert str(raised.value).startswith(f"{name}:"), str(raised.value)


def test_one_process_of_each_and_the_postgres_broker_by_default() -> None:
    settings = load_settings({})
    assert (settings.WEB_CONCURRENCY, settings.WORKER_PROCESSES, settings.DRAMATIQ_BROKER_URL) == (1, 1, "")
    assert broker_kind(settings.DRAMATIQ_BROKER_URL) == "postgres"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "rabbitmq"),
        ("amqps://u:p@mq.example.com", "rabbitmq"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("rediss://r.example.com:6380", "redis"),
        ("postgresql://127.0.0.1/nmc", "postgres"),
        ("postgres://127.0.0.1/nmc", "postgres"),
    ],
)
def test_the_broker_follows_the_url_scheme(url: str, kind: str) -> None:
    assert broker_kind(load_settings({"DRAMATIQ_BROKER_URL": url}).DRAMATIQ_BROKER_URL) == kind


def test_connections_per_process_count_every_pool() -> None:
    settings = load_settings({"DB_POOL_SIZE": "5", "DB_HOT_POOL_SIZE": "4", "OUTBOX_CONCURRENCY": "2"})
    assert web_process_connections(settings) == 5 + 4 + 5 + 1  # SQLAlchemy, the hot pool, the broker, the flusher
    assert worker_process_connections(settings) == 5 + 4 + 2 + 1 + 1 + 5
    on_rabbitmq = load_settings({"DB_POOL_SIZE": "5", "DRAMATIQ_BROKER_URL": "amqp://127.0.0.1"})
    assert web_process_connections(on_rabbitmq) == 5 + 10 + 1  # no broker pool on Postgres


def test_processes_times_pools_above_the_budget_are_refused_naming_the_variables() -> None:
    fits = load_settings({"WORKER_PROCESSES": "2"})  # 2 x 33 with the defaults
    assert check_connection_budget("worker", fits) == 66
    too_many = load_settings({"WEB_CONCURRENCY": "5", "DB_CONNECTION_BUDGET": "100"})  # 5 x 31
    with pytest.raises(SettingsError) as raised:
        check_connection_budget("web", too_many)
    message = str(raised.value)
    assert message.startswith("DB_CONNECTION_BUDGET:")
    for name in ("WEB_CONCURRENCY=5", "DB_POOL_SIZE", "DB_HOT_POOL_SIZE", "155", "DB_CONNECTION_BUDGET=100"):
        assert name in message, message


@pytest.mark.parametrize("command", ["web", "worker"])
def test_the_command_refuses_to_start_over_budget(command: str) -> None:
    variable = "WEB_CONCURRENCY" if command == "web" else "WORKER_PROCESSES"
    result = run_nmc(command, env={variable: "8", "DATABASE_URL": "postgresql://127.0.0.1:9/none"}, check=False)
    assert result.returncode == 2, result.stderr
    assert "DB_CONNECTION_BUDGET" in result.stderr and variable in result.stderr

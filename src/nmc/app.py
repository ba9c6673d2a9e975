"""The Litestar application (a composition root): webhooks, REST under `/api`, `/healthz`, `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from advanced_alchemy.exceptions import DuplicateKeyError, NotFoundError
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Controller, Litestar, Router
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.plugins.prometheus import PrometheusConfig
from litestar.types import Scope
from sqlalchemy.exc import DBAPIError

from nmc.billing import BillingController, StripeWebhooks
from nmc.calendars import CALENDAR_CONTROLLERS, CALENDAR_ROUTES, live_calendar_check
from nmc.conversations import MessagingSettingsController, ThreadController
from nmc.db import (
    DATABASE_UNAVAILABLE,
    DRIVER_ERROR,
    close_hot_pool,
    database_unavailable,
    discard_broken_connections,
    get_alchemy_config,
    request_transaction,
)
from nmc.identity import ClerkAuthenticationMiddleware, ClerkWebhooks, TenantController
from nmc.kpis import KpiController
from nmc.observability.controllers import healthz
from nmc.observability.correlation import correlation_middleware
from nmc.observability.flusher import start_flusher, stop_flusher
from nmc.observability.logging import configure_logging
from nmc.observability.maintenance import maintenance_runs as _maintenance_probe  # noqa: F401 (registers it)
from nmc.observability.metrics import MetricsController
from nmc.observability.process_figures import summed_samples as _summed_samples_probe  # noqa: F401 (registers it)
from nmc.observability.providers import provider_requests as _provider_requests_probe  # noqa: F401 (registers it)
from nmc.ops_api import ops_router
from nmc.problems import DomainError, domain_problem, refuse_nul_characters, schema_problem
from nmc.scheduling import SCHEDULING_CONTROLLERS, register_live_busy_check
from nmc.settings import get_settings
from nmc.telephony import NUMBER_CONTROLLERS, TwilioWebhooks

API_CONTROLLERS: list[type[Controller]] = [
    TenantController,
    *SCHEDULING_CONTROLLERS,
    ThreadController,
    MessagingSettingsController,
    KpiController,
    *CALENDAR_CONTROLLERS,
    BillingController,
    *NUMBER_CONTROLLERS,
]
WEBHOOK_CONTROLLERS: list[type[Controller]] = [TwilioWebhooks, ClerkWebhooks, StripeWebhooks, *CALENDAR_ROUTES]


def _not_found(exc: NotFoundError) -> ProblemDetailsException:
    return ProblemDetailsException(status_code=404, title="Not found", detail="No such resource")


def _conflict(exc: DuplicateKeyError) -> ProblemDetailsException:
    return ProblemDetailsException(status_code=409, title="Conflict", detail="That resource already exists")


def _database_error(exc: Exception) -> ProblemDetailsException:
    """The database unreachable: a fast 503 and one line, not a traceback per request. Any other
    database error is a bug: a 500, logged with its traceback."""
    log = structlog.get_logger(module="http")
    if not database_unavailable(exc):
        log.error("http.unhandled_error", http_status=500, exc_info=exc)
        return ProblemDetailsException(status_code=500, title="Internal Server Error")
    log.warning("db.unavailable", error=type(exc).__name__, http_status=503)
    discard_broken_connections()
    return ProblemDetailsException(
        status_code=503,
        title="Service unavailable",
        detail="The database cannot be reached; retry shortly",
        headers={"Retry-After": "2"},
    )


async def log_unexpected_error(exc: Exception, scope: Scope) -> None:
    """Every unhandled error is logged with its traceback; expected (4xx) errors are not noise."""
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return
    if isinstance(exc, tuple(PROBLEM_DETAILS)):
        return  # rendered as a problem by the plugin (a database error logs itself)
    structlog.get_logger(module="http").error(
        "http.unhandled_error", path=scope.get("path"), http_status=500, exc_info=exc
    )


def _grouped_failure(group: ExceptionGroup[Exception]) -> ProblemDetailsException:
    """Litestar closes several generator dependencies in a task group, so a failed commit in
    `request_transaction` arrives wrapped: answer for the (first) failure inside."""
    failure: Exception = group
    while isinstance(failure, ExceptionGroup):
        failure = failure.exceptions[0]
    for kind, problem in PROBLEM_DETAILS.items():
        if kind is not ExceptionGroup and isinstance(failure, kind):
            return problem(failure)
    structlog.get_logger(module="http").error("http.unhandled_error", http_status=500, exc_info=failure)
    return ProblemDetailsException(status_code=500, title="Internal Server Error")


# Domain errors and the problem each becomes (4xx; 503 while the database is unreachable).
PROBLEM_DETAILS: dict[type[Exception], Callable[[Any], ProblemDetailsException]] = {
    DomainError: domain_problem,
    NotFoundError: _not_found,
    DuplicateKeyError: _conflict,
    DBAPIError: _database_error,
    DRIVER_ERROR: _database_error,
    **dict.fromkeys(DATABASE_UNAVAILABLE, _database_error),
    ExceptionGroup: _grouped_failure,
}


def api_router() -> Router:
    return Router(
        path="/api",
        route_handlers=API_CONTROLLERS,
        middleware=[DefineMiddleware(ClerkAuthenticationMiddleware)],
        security=[{"ClerkSession": []}],
        exception_handlers={ValidationException: schema_problem},
        before_request=refuse_nul_characters,
    )


def create_app() -> Litestar:
    settings = get_settings()
    configure_logging(settings.LOG_LEVEL)
    register_live_busy_check(live_calendar_check)  # scheduling asks the resource's calendar before a booking
    prometheus = PrometheusConfig(app_name="nmc", prefix="nmc", group_path=True, exclude=["/metrics"])
    return Litestar(
        route_handlers=[healthz, MetricsController, api_router(), ops_router(), *WEBHOOK_CONTROLLERS],
        plugins=[
            SQLAlchemyPlugin(config=get_alchemy_config()),
            ProblemDetailsPlugin(
                ProblemDetailsConfig(
                    enable_for_all_http_exceptions=True,
                    exception_to_problem_detail_map=PROBLEM_DETAILS,
                )
            ),
        ],
        middleware=[correlation_middleware, prometheus.middleware],
        dependencies={"db_session": Provide(request_transaction)},
        openapi_config=OpenAPIConfig(
            title="NeverMissCall API",
            version="1.0.0",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
            components=Components(
                security_schemes={"ClerkSession": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
        ),
        after_exception=[log_unexpected_error],
        logging_config=None,  # ours (configure_logging above): Litestar's would replace the root handler
        # This process's in-memory figures reach /metrics through Postgres (ADR 0018); the last ones on stop.
        on_startup=[start_flusher],
        on_shutdown=[stop_flusher, close_hot_pool],
        debug=False,
    )

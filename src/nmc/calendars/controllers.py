"""Calendars over HTTP: the REST API under `/api/calendars` (Clerk session, tenant-scoped), the OAuth
callback the owner's browser comes back to, and Google's push notifications (the webhook pipeline).

Work that must wait for the commit (the first sync, the push channel) runs as the response's background
task: the session commits before the response is sent, the task after.
"""

from __future__ import annotations

import html
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import Redirect
from litestar.status_codes import HTTP_303_SEE_OTHER
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.calendars import service
from nmc.calendars.models import Provider
from nmc.calendars.schemas import (
    AuthorizationUrl,
    CalendarConnect,
    CalendarConnectionRead,
    CalendarConnectionUpdate,
    JobberConnect,
    JobberUserMapping,
    JobberUserRead,
)
from nmc.calendars.webhooks import CALENDAR_NOTIFICATION, GOOGLE_PUSH, JOBBER_EVENT, JOBBER_PUSH
from nmc.identity import Principal
from nmc.settings import get_settings
from nmc.webhooks import receive

AuthedRequest = Request[Principal, Any, Any]


class CalendarController(Controller):
    path = "/calendars"
    tags = ["Calendars"]

    @get(summary="Calendar connections: provider, resource, calendar, status, last sync, last error, next poll")
    async def list_calendars(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession]
    ) -> list[CalendarConnectionRead]:
        return await service.list_connections(db_session, request.user.tenant_id)

    @post(
        "/google/connect",
        status_code=200,
        summary="Start connecting a resource's Google calendar",
        description="Answers the consent URL to send the owner's browser to; Google brings it back to "
        "`/oauth/google/callback`, which stores the connection and redirects to the UI with `outcome`.",
    )
    async def connect_google(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[CalendarConnect]
    ) -> AuthorizationUrl:
        url = await service.begin_connect(
            db_session,
            request.user.tenant_id,
            request.user.user_id,
            data.resource_id,
            data.calendar_id,
            Provider.GOOGLE,
        )
        return AuthorizationUrl(authorization_url=url)

    @post(
        "/jobber/connect",
        status_code=200,
        summary="Start connecting the business's Jobber account",
        description="Answers Jobber's consent URL; Jobber brings the browser back to `/oauth/jobber/callback`, "
        "which stores the connection (one per business) and redirects to the UI with `outcome`. Then map the "
        "account's users to resources (`/api/calendars/{id}/jobber-users`): unmapped users' visits block nothing.",
    )
    async def connect_jobber(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], data: JSONBody[JobberConnect]
    ) -> AuthorizationUrl:
        url = await service.begin_connect(
            db_session, request.user.tenant_id, request.user.user_id, data.resource_id, "", Provider.JOBBER
        )
        return AuthorizationUrl(authorization_url=url)

    @get("/{connection_id:uuid}/jobber-users", summary="The Jobber account's users and the resource each is mapped to")
    async def list_jobber_users(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], connection_id: FromPath[UUID]
    ) -> list[JobberUserRead]:
        return await service.list_jobber_users(db_session, request.user.tenant_id, connection_id)

    @patch(
        "/{connection_id:uuid}/jobber-users",
        summary="Map Jobber users to resources (resource_id null: unmap); a full sync follows",
    )
    async def map_jobber_users(
        self,
        request: AuthedRequest,
        db_session: NamedDependency[AsyncSession],
        connection_id: FromPath[UUID],
        data: JSONBody[JobberUserMapping],
    ) -> Response[list[JobberUserRead]]:
        users, changed = await service.map_jobber_users(db_session, request.user.tenant_id, connection_id, data)
        task = BackgroundTask(service.after_update, connection_id) if changed else None
        return Response(users, background=task)

    @get("/{connection_id:uuid}", summary="One calendar connection")
    async def read_calendar(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], connection_id: FromPath[UUID]
    ) -> CalendarConnectionRead:
        return await service.get_connection(db_session, request.user.tenant_id, connection_id)

    @patch("/{connection_id:uuid}", summary="Change the calendar and/or the resource (a full sync follows)")
    async def update_calendar(
        self,
        request: AuthedRequest,
        db_session: NamedDependency[AsyncSession],
        connection_id: FromPath[UUID],
        data: JSONBody[CalendarConnectionUpdate],
    ) -> Response[CalendarConnectionRead]:
        read, changed = await service.update_connection(db_session, request.user.tenant_id, connection_id, data)
        task = BackgroundTask(service.after_update, connection_id) if changed else None
        return Response(read, background=task)

    @delete(
        "/{connection_id:uuid}",
        summary="Disconnect: stop the push channel, revoke the grant, remove the calendar's busy blocks",
    )
    async def delete_calendar(
        self, request: AuthedRequest, db_session: NamedDependency[AsyncSession], connection_id: FromPath[UUID]
    ) -> None:
        await service.disconnect(db_session, request.user.tenant_id, connection_id)


def _page(title: str, text: str, status: int) -> Response[str]:
    body = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return Response(body, status_code=status, media_type="text/html")


async def _callback(
    provider: Provider, db_session: AsyncSession, code: str | None, oauth_state: str | None, error: str | None
) -> Response[Any]:
    """The OAuth callback of either provider (the state names which one it was begun for)."""
    try:
        outcome = await service.complete_connect(db_session, code=code, state=oauth_state, error=error)
    except service.StateRefused:
        return _page("This link has expired", "Start connecting your calendar again from NeverMissCall.", status=400)
    await db_session.commit()  # the session commits 2xx answers by itself, not this redirect
    task = BackgroundTask(service.after_connect, outcome.connection_id) if outcome.connection_id else None
    # One settings page in the UI for every calendar provider (`provider=` says which came back).
    ui = get_settings().GOOGLE_REDIRECT_UI_URL
    if not ui:
        text = "Your calendar is connected." if outcome.outcome == "connected" else f"Not connected: {outcome.outcome}."
        page = _page("Google Calendar" if provider == Provider.GOOGLE else "Jobber", text, status=200)
        page.background = task
        return page
    query = {"provider": provider.value, "outcome": outcome.outcome}
    if outcome.connection_id:
        query["connection_id"] = str(outcome.connection_id)
    separator = "&" if "?" in ui else "?"
    return Redirect(f"{ui}{separator}{urlencode(query)}", status_code=HTTP_303_SEE_OTHER, background=task)


class JobberWebhooks(Controller):
    path = "/webhooks"
    tags = ["Webhooks"]
    include_in_schema = False

    @post("/jobber", status_code=200, request_max_body_size=JOBBER_PUSH.max_body_bytes)
    async def jobber(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Response[str]:
        return await receive(JOBBER_EVENT, request, db_session)


class OAuthCallback(Controller):
    """Not under `/api`: the owner's browser arrives here from the provider's consent page (no Clerk
    token): `/oauth/google/callback`, `/oauth/jobber/callback` (an unknown provider is a 404)."""

    path = "/oauth"
    include_in_schema = False

    @get("/{provider:str}/callback")
    async def callback(
        self,
        provider: str,
        db_session: NamedDependency[AsyncSession],
        code: str | None = None,
        oauth_state: Annotated[str | None, Parameter(query="state")] = None,
        error: str | None = None,
    ) -> Response[Any]:
        if provider not in Provider.__members__.values():
            raise NotFoundException(f"No calendar provider {provider!r}")
        return await _callback(Provider(provider), db_session, code, oauth_state, error)


class GoogleCalendarWebhooks(Controller):
    path = "/webhooks/google"
    tags = ["Webhooks"]
    include_in_schema = False

    @post("/calendar", status_code=200, request_max_body_size=GOOGLE_PUSH.max_body_bytes)
    async def notification(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Response[str]:
        return await receive(CALENDAR_NOTIFICATION, request, db_session)

"""The owner's inbox, messaging settings and lead KPIs. Every handler is scoped by the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from nmc.conversations.schemas import (
    MessageRead,
    MessagingSettingsRead,
    MessagingSettingsWrite,
    ReplyCreate,
    ThreadDetail,
    ThreadPage,
    ThreadRead,
    ThreadStatusFilter,
)
from nmc.conversations.service import InboxService
from nmc.identity import Principal


async def provide_inbox(db_session: NamedDependency[AsyncSession]) -> InboxService:
    return InboxService(db_session)


DEPENDENCIES = {"inbox": Provide(provide_inbox)}


class ThreadController(Controller):
    path = "/threads"
    tags = ["Inbox"]
    dependencies = DEPENDENCIES

    @get(
        summary="List threads",
        description="Newest activity first. Filter by `status` and `unread`; pass `next_cursor` back as "
        "`cursor` for the next page.",
    )
    async def list_threads(
        self,
        request: Request[Principal, Any, Any],
        inbox: NamedDependency[InboxService],
        status: FromQuery[ThreadStatusFilter | None] = None,
        unread: Annotated[
            bool | None, QueryParameter(description="true: threads with unread messages; false: fully read ones")
        ] = None,
        cursor: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
    ) -> ThreadPage:
        return await inbox.list_threads(
            request.user.tenant_id, status=status, unread=unread, cursor=cursor, limit=limit
        )

    @get("/{thread_id:uuid}", summary="A thread with its latest messages (oldest first)")
    async def get_thread(
        self,
        request: Request[Principal, Any, Any],
        inbox: NamedDependency[InboxService],
        thread_id: FromPath[UUID],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        before: Annotated[
            str | None, QueryParameter(description="`earlier_messages_cursor` of a previous answer")
        ] = None,
    ) -> ThreadDetail:
        return await inbox.get_thread(request.user.tenant_id, thread_id, limit=limit, before=before)

    @post(
        "/{thread_id:uuid}/messages",
        status_code=202,
        summary="Reply to the caller",
        description="Queued through the outbox and sent by the worker with the same guards as every text "
        "(opt-out at send time, quiet hours, PAUSE_OUTBOUND_SMS); answered with the message as `pending`. "
        "409 when the caller opted out or the number is a landline. A retried request with the same "
        "`Idempotency-Key` returns the first one's message.",
    )
    async def reply(
        self,
        request: Request[Principal, Any, Any],
        inbox: NamedDependency[InboxService],
        thread_id: FromPath[UUID],
        data: JSONBody[ReplyCreate],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", min_length=1, max_length=100, required=False)
        ] = None,
    ) -> MessageRead:
        return await inbox.reply(request.user.tenant_id, thread_id, data.body, idempotency_key)

    @post("/{thread_id:uuid}/read", status_code=200, summary="Mark every message of the thread read")
    async def mark_read(
        self, request: Request[Principal, Any, Any], inbox: NamedDependency[InboxService], thread_id: FromPath[UUID]
    ) -> ThreadRead:
        return await inbox.mark_read(request.user.tenant_id, thread_id)

    @post("/{thread_id:uuid}/close", status_code=200, summary="Close the thread (cancels its follow-up)")
    async def close(
        self, request: Request[Principal, Any, Any], inbox: NamedDependency[InboxService], thread_id: FromPath[UUID]
    ) -> ThreadRead:
        return await inbox.close(request.user.tenant_id, thread_id)

    @post(
        "/{thread_id:uuid}/reopen",
        status_code=200,
        summary="Reopen a closed or booked thread",
        description="409 when the caller has a newer open thread.",
    )
    async def reopen(
        self, request: Request[Principal, Any, Any], inbox: NamedDependency[InboxService], thread_id: FromPath[UUID]
    ) -> ThreadRead:
        return await inbox.reopen(request.user.tenant_id, thread_id)


class MessagingSettingsController(Controller):
    path = "/settings/messaging"
    tags = ["Settings"]
    dependencies = DEPENDENCIES

    @get(summary="Templates, follow-up, help text, owner alerts, quiet hours, cooldown")
    async def read_settings(
        self, request: Request[Principal, Any, Any], inbox: NamedDependency[InboxService]
    ) -> MessagingSettingsRead:
        return await inbox.messaging_settings(request.user.tenant_id)

    @put(
        summary="Replace the messaging settings",
        description="Omitted fields take their defaults; a null template uses the default text. Templates take "
        "the merge fields {business_name}, {caller_number}, {booking_prompt}; an unknown one is a 422 "
        "naming the field.",
    )
    async def update_settings(
        self,
        request: Request[Principal, Any, Any],
        inbox: NamedDependency[InboxService],
        data: JSONBody[MessagingSettingsWrite],
    ) -> MessagingSettingsRead:
        return await inbox.update_messaging_settings(request.user.tenant_id, data)

"""Calendars' own tables: connections (OAuth tokens encrypted, the sync cursor, the state on-call reads),
push channels, pending OAuth states, where bookings were written back, and the counters `/metrics` reads.

Busy time itself lands in scheduling's `sched_busy_blocks`, through scheduling's face (source + external
id); nothing here refers to it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from advanced_alchemy.base import DefaultBase, UUIDAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column


class Provider(StrEnum):
    GOOGLE = "google"
    JOBBER = "jobber"


PROVIDERS = tuple(Provider)
JOBBER_ONLY = "provider = 'jobber'"


class ConnectionStatus(StrEnum):
    ACTIVE = "active"  # synced by push and poll
    NEEDS_REAUTH = "needs_reauth"  # the grant is gone (401, invalid_grant): not polled; its blocks stay as last known
    ERROR = "error"  # the calendar refuses us for another reason (404 calendar, 403 forbidden): not polled


class CalendarConnection(UUIDAuditBase):
    """One resource's calendar at one provider."""

    __tablename__ = "calendar_connections"
    __table_args__ = (
        UniqueConstraint("resource_id", "provider", name="uq_calendar_connections_resource_provider"),
        CheckConstraint("status IN ('active', 'needs_reauth', 'error')", name="status"),
        Index("ix_calendar_connections_tenant", "tenant_id"),
        Index("ix_calendar_connections_next_poll", "next_poll_at"),
        # Jobber (ADR 0016): one account per tenant, one tenant per account (webhooks route by account id).
        Index("uq_calendar_connections_jobber_tenant", "tenant_id", unique=True, postgresql_where=text(JOBBER_ONLY)),
        Index("uq_calendar_connections_jobber_account", "calendar_id", unique=True, postgresql_where=text(JOBBER_ONLY)),
    )

    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))  # a Provider
    # Google: the calendar's id. Jobber: the account's id (a token speaks for one account).
    # The connection's resource is then only where it was connected from: busy time goes to the
    # resources its Jobber users are mapped to (`CalendarJobberUser`).
    calendar_id: Mapped[str] = mapped_column(String(1024), default="primary")
    status: Mapped[str] = mapped_column(String(20), default=ConnectionStatus.ACTIVE)
    connected_by: Mapped[str | None] = mapped_column(String(255), default=None)  # the Clerk user
    scopes: Mapped[str] = mapped_column(Text, default="")
    # Fernet tokens (a key derived from SECRET_KEY): never stored or logged in clear.
    refresh_token_encrypted: Mapped[str] = mapped_column(Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    access_token_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # The provider's cursor (Google's nextSyncToken); NULL: the next sync is a full one.
    sync_token: Mapped[str | None] = mapped_column(Text, default=None)
    last_full_sync_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    last_synced_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    last_sync_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    next_poll_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # Set when a sync is queued (a push notification, the poll tick), cleared when one starts: bursts coalesce.
    sync_requested_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # One sync of a connection at a time, whichever jobs process runs it.
    sync_lease_until: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)  # masked
    last_error_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    # The owner was told the grant is gone (once per loss; reconnecting clears it).
    reauth_notified_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    watch_attempted_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    watch_error: Mapped[str | None] = mapped_column(String(500), default=None)


class CalendarChannel(DefaultBase):
    """A push channel (Google `events.watch`). Its token is derived from its id and SECRET_KEY, so a
    notification is verified without a lookup; a renewal opens a new one before the old is stopped."""

    __tablename__ = "calendar_channels"
    __table_args__ = (Index("ix_calendar_channels_connection", "connection_id", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    connection_id: Mapped[UUID] = mapped_column(ForeignKey("calendar_connections.id", ondelete="CASCADE"))
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    resource_id: Mapped[str | None] = mapped_column(String(255), default=None)  # the provider's resource id
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())
    stopped_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class OAuthState(DefaultBase):
    """An OAuth `state` handed out and not yet used: the callback deletes it (single use)."""

    __tablename__ = "calendar_oauth_states"
    __table_args__ = (Index("ix_calendar_oauth_states_expires_at", "expires_at"),)

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(255))
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(20))
    calendar_id: Mapped[str] = mapped_column(String(1024))
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class EventLink(DefaultBase):
    """A booking written back to a connection's calendar (or deleted there): the write-back's memory."""

    __tablename__ = "calendar_event_links"
    __table_args__ = (
        CheckConstraint("state IN ('written', 'deleted', 'failed')", name="state"),
        Index("ix_calendar_event_links_connection", "connection_id"),
    )

    booking_id: Mapped[UUID] = mapped_column(primary_key=True)
    connection_id: Mapped[UUID] = mapped_column(
        ForeignKey("calendar_connections.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # Google: the event id. Jobber: "<request id> <assessment id>" (the request carries our marker).
    event_id: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class CalendarJobberUser(DefaultBase):
    """A Jobber user (team member) mapped to one of our resources: their visits block it."""

    __tablename__ = "calendar_jobber_users"
    __table_args__ = (Index("ix_calendar_jobber_users_resource", "resource_id"),)

    connection_id: Mapped[UUID] = mapped_column(
        ForeignKey("calendar_connections.id", ondelete="CASCADE"), primary_key=True
    )
    jobber_user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    resource_id: Mapped[UUID] = mapped_column(ForeignKey("sched_resources.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(255), default=None)  # as Jobber had it when mapped
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())


class CalendarCounter(DefaultBase):
    """Counters observed in the jobs and worker processes, read by the web's `/metrics` (they only grow)."""

    __tablename__ = "calendar_counters"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)  # sync_errors | freebusy_fail_open
    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), server_default=func.now())

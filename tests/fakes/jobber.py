"""Fake Jobber (OAuth + GraphQL API + webhooks) speaking the wire format of /work/shared/providers.md and the
contract both sides share (tests/fakes/jobber.py here, src/nmc/calendars/jobber.py there):

- OAuth: `GET /api/oauth/authorize` consents at once (302 to `redirect_uri?code&state`); `POST /api/oauth/token`
  (form or query parameters, `authorization_code` | `refresh_token`) answers `{access_token, refresh_token}`:
  the access token is an HS256 JWT (`exp` 60 minutes ahead, claim `account_id`), the refresh token ROTATES — each
  refresh issues a new one and the old one is refused at once (401 `{"error": "invalid_grant"}`).
- `POST /api/graphql`: `X-JOBBER-GRAPHQL-VERSION` missing or unknown → 400; a bad, expired or revoked token → 401;
  more than `request_limit` requests per `request_window` seconds for one account → 429. Queries are parsed and
  validated against an SDL schema (graphql-core), so a query the schema does not accept gets GraphQL errors as
  Jobber's would. Cost: each scalar (leaf) field 1, object fields and `nodes`/`edges` 0, a connection
  `first` x (the cost of its `nodes`/`edges`) + its other fields (`pageInfo`, `totalCount`), 100 assumed
  without `first`. The cost is taken from a leaky bucket per account before running (maximumAvailable 10000,
  restoreRate 500/s); short of it → 200 `THROTTLED` without data. After running, the difference to the actual
  cost (one per scalar value returned) is refunded, as Jobber (after Shopify) does. Every 200 carries
  `extensions.cost` and `extensions.versioning`.
- Webhooks: `X-Jobber-Hmac-SHA256` = base64(HMAC-SHA256(raw body, client secret)), body
  `{"data":{"webHookEvent":{topic, appId, accountId, itemId, occurredAt}}}`, POSTed from a background thread;
  our answer's status and latency are recorded per delivery.

Where the real schema is not in providers.md, the schema below follows the shared contract: unconfirmed against
Jobber (the names of input and payload types, `requestStatus`, the cursor format, the all-day representation).

In-process (a uvicorn thread): tests arrange and inspect the state directly; the real processes of the e2e tests
reach it over HTTP. `python -m tests.fakes.jobber --port N [--webhook-url URL]` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import itertools
import json
import queue
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import jwt
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    build_schema,
    execute,
    get_named_type,
    parse,
    validate,
    value_from_ast,
)
from graphql.execution import ExecutionResult

from tests.fakes._asgi import Receive, Request, Response, Scope, Send, ThreadedServer, read_request, send_json

DEFAULT_VERSION = "2025-01-20"
SUPPORTED_VERSIONS = frozenset({"2023-11-15", "2024-06-10", "2025-01-20", "2025-04-16"})
DEFAULT_CONNECTION_SIZE = 100  # what the cost assumes for a connection without `first`
MAX_PAGE_SIZE = 100  # a larger `first` is capped (graphql-ruby's max_page_size)

SDL = """
scalar EncodedId
scalar ISO8601DateTime

enum VisitStatusTypeEnum { UPCOMING ACTIVE LATE COMPLETED UNSCHEDULED CANCELLED }
enum RequestStatusTypeEnum { new assessment_scheduled archived }

type PageInfo { hasNextPage: Boolean! hasPreviousPage: Boolean! startCursor: String endCursor: String }
type UserError { message: String! path: [String!]! }

type Account { id: EncodedId! name: String! }
type Name { first: String! last: String! full: String! }
type Email { raw: String! }
type User { id: EncodedId! name: Name! email: Email! isAccountOwner: Boolean! }
type UserEdge { cursor: String! node: User! }
type UserConnection { nodes: [User!]! edges: [UserEdge!]! pageInfo: PageInfo! totalCount: Int! }

type ClientPhoneNumber { id: EncodedId! number: String! primary: Boolean! description: String }
type Client {
  id: EncodedId! firstName: String! lastName: String! companyName: String name: String!
  phones: [ClientPhoneNumber!]!
}
type ClientEdge { cursor: String! node: Client! }
type ClientConnection { nodes: [Client!]! edges: [ClientEdge!]! pageInfo: PageInfo! totalCount: Int! }

type Job { id: EncodedId! title: String jobNumber: Int! }
type Visit {
  id: EncodedId! title: String startAt: ISO8601DateTime endAt: ISO8601DateTime allDay: Boolean!
  completedAt: ISO8601DateTime visitStatus: VisitStatusTypeEnum!
  assignedUsers(first: Int, after: String): UserConnection! job: Job client: Client! createdAt: ISO8601DateTime!
}
type VisitEdge { cursor: String! node: Visit! }
type VisitConnection { nodes: [Visit!]! edges: [VisitEdge!]! pageInfo: PageInfo! totalCount: Int! }

type Assessment {
  id: EncodedId! startAt: ISO8601DateTime endAt: ISO8601DateTime
  assignedUsers(first: Int, after: String): UserConnection!
}
type RequestNote { id: EncodedId! message: String! createdAt: ISO8601DateTime! }
type RequestNoteEdge { cursor: String! node: RequestNote! }
type RequestNoteConnection { nodes: [RequestNote!]! edges: [RequestNoteEdge!]! pageInfo: PageInfo! totalCount: Int! }
type Request {
  id: EncodedId! title: String client: Client assessment: Assessment requestStatus: RequestStatusTypeEnum!
  notes(first: Int, after: String): RequestNoteConnection! createdAt: ISO8601DateTime!
}
type RequestEdge { cursor: String! node: Request! }
type RequestConnection { nodes: [Request!]! edges: [RequestEdge!]! pageInfo: PageInfo! totalCount: Int! }

input Iso8601DateTimeRangeInput { after: ISO8601DateTime before: ISO8601DateTime }
input VisitFilterAttributes { startAt: Iso8601DateTimeRangeInput status: VisitStatusTypeEnum }

type Query {
  account: Account!
  users(first: Int, after: String): UserConnection!
  visits(first: Int, after: String, filter: VisitFilterAttributes, timezone: String): VisitConnection!
  visit(id: EncodedId!): Visit
  clients(first: Int, after: String, searchTerm: String): ClientConnection!
  client(id: EncodedId!): Client
  requests(first: Int, after: String, searchTerm: String): RequestConnection!
  request(id: EncodedId!): Request
}

input PhoneNumberCreateAttributes { number: String! primary: Boolean description: String }
input EmailCreateAttributes { address: String! primary: Boolean description: String }
input ClientCreateInput {
  firstName: String lastName: String companyName: String
  phones: [PhoneNumberCreateAttributes!] emails: [EmailCreateAttributes!]
}
input AssessmentAttributes {
  startAt: ISO8601DateTime endAt: ISO8601DateTime assignedUserIds: [ID] instructions: String
}
input RequestCreateInput { clientId: EncodedId propertyId: EncodedId title: String assessment: AssessmentAttributes }
input RequestCreateNoteInput { message: String }
input AssessmentEditScheduleInput { startAt: ISO8601DateTime endAt: ISO8601DateTime }

type ClientCreatePayload { client: Client userErrors: [UserError!]! }
type RequestCreatePayload { request: Request userErrors: [UserError!]! }
type RequestCreateNotePayload { requestNote: RequestNote userErrors: [UserError!]! }
type AssessmentEditSchedulePayload { assessment: Assessment userErrors: [UserError!]! }
type RequestArchivePayload { request: Request userErrors: [UserError!]! }

type Mutation {
  clientCreate(input: ClientCreateInput!): ClientCreatePayload!
  requestCreate(input: RequestCreateInput!): RequestCreatePayload!
  requestCreateNote(requestId: EncodedId!, input: RequestCreateNoteInput!): RequestCreateNotePayload!
  assessmentEditSchedule(assessmentId: EncodedId!, input: AssessmentEditScheduleInput!): AssessmentEditSchedulePayload!
  requestArchive(requestId: EncodedId!): RequestArchivePayload!
}
"""


# ---------------------------------------------------------------------------- ids, times
def encode_id(kind: str, number: int) -> str:
    """Jobber's encoded id: base64 of `gid://Jobber/<Kind>/<n>`."""
    return base64.b64encode(f"gid://Jobber/{kind}/{number}".encode()).decode()


def decode_id(encoded: str, kind: str | None = None) -> int | None:
    """The number inside an encoded id (of `kind`, when given), or None for anything else."""
    try:
        text = base64.b64decode(str(encoded), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    parts = text.split("/")
    if len(parts) != 5 or parts[:3] != ["gid:", "", "Jobber"] or (kind and parts[3] != kind):
        return None
    return int(parts[4]) if parts[4].isdigit() else None


def _cursor(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.b64decode(cursor).decode())
    except ValueError as exc:
        raise GraphQLError(f"Invalid cursor: {cursor}") from exc


def parse_datetime(value: Any) -> datetime:
    """ISO8601DateTime input: an offset is kept, a naive time is read as UTC (as Rails does)."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise GraphQLError(f"Invalid ISO8601DateTime: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime | None, zone: ZoneInfo | None = None) -> str | None:
    if moment is None:
        return None
    shown = moment.astimezone(zone or UTC)
    return shown.isoformat(timespec="seconds").replace("+00:00", "Z")


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


# ---------------------------------------------------------------------------- state
@dataclass
class User:
    id: int
    first: str
    last: str
    email: str
    owner: bool = False


@dataclass
class Visit:
    id: int
    title: str
    start_at: datetime | None
    end_at: datetime | None
    all_day: bool
    user_ids: list[int]
    job_id: int
    client_id: int
    completed_at: datetime | None = None
    status: str | None = None  # an explicit visitStatus (e.g. CANCELLED); otherwise derived from the times
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Client:
    id: int
    first_name: str
    last_name: str
    company_name: str | None
    phones: list[dict[str, Any]]  # {id, number, primary, description}


@dataclass
class Assessment:
    id: int
    start_at: datetime | None
    end_at: datetime | None
    user_ids: list[int]


@dataclass
class JobberRequest:
    id: int
    title: str
    client_id: int
    assessment: Assessment | None
    notes: list[dict[str, Any]] = field(default_factory=list)  # {id, message, createdAt}
    archived: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Account:
    id: int
    name: str
    timezone: str
    maximum_available: float
    restore_rate: float
    currently_available: float
    bucket_at: float = field(default_factory=time.monotonic)
    users: dict[int, User] = field(default_factory=dict)
    visits: dict[int, Visit] = field(default_factory=dict)
    clients: dict[int, Client] = field(default_factory=dict)
    requests: dict[int, JobberRequest] = field(default_factory=dict)
    jobs: dict[int, str] = field(default_factory=dict)
    request_times: collections.deque[float] = field(default_factory=collections.deque)
    refreshes: int = 0
    refused_refreshes: int = 0
    connected: bool = False

    @property
    def encoded_id(self) -> str:
        return encode_id("Account", self.id)

    def restore(self) -> float:
        now = time.monotonic()
        self.currently_available = min(
            self.maximum_available, self.currently_available + (now - self.bucket_at) * self.restore_rate
        )
        self.bucket_at = now
        return self.currently_available

    def throttle_status(self) -> dict[str, Any]:
        return {
            "maximumAvailable": int(self.maximum_available),
            "currentlyAvailable": int(self.restore()),
            "restoreRate": int(self.restore_rate),
        }


@dataclass
class Failure:
    status: int | None
    delay: float
    times: int
    body: Any = None


@dataclass
class Delivery:
    """One POST of a webhook to our endpoint (a duplicate is a second Delivery with the same body)."""

    topic: str
    account_id: str
    item_id: str
    body: bytes
    signature: str
    status: int | str | None = None  # our answer's status, or the transport error's name
    latency: float | None = None  # seconds until our answer
    sent_at: float | None = None
    attempt: int = 1  # 2, 3 … for Jobber's retries of a delivery we failed

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Call:
    """One GraphQL request as the fake saw it."""

    operation: str | None
    account_id: str | None
    variables: dict[str, Any]
    status: int
    requested_cost: int = 0
    throttled: bool = False
    errors: list[str] = field(default_factory=list)


class FakeJobberState:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.lock = threading.RLock()
        self.client_id = client_id
        self.client_secret = client_secret
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.ids = itertools.count(1001)
            self.accounts: dict[int, Account] = {}
            self.visit_accounts: dict[int, int] = {}  # visit id → account id
            self.codes: dict[str, dict[str, Any]] = {}
            self.refresh_tokens: dict[str, dict[str, Any]] = {}  # token → {account, used, revoked}
            self.access_tokens: dict[str, dict[str, Any]] = {}  # jti → {account, exp, revoked}
            self.jwt_secret = secrets.token_hex(32)
            self.failures: dict[str, list[Failure]] = {}
            self.calls: list[Call] = []
            self.deliveries: list[Delivery] = []
            self.consenting_account: int | None = None
            # knobs
            self.access_ttl: float = 3600
            self.supported_versions: set[str] = set(SUPPORTED_VERSIONS)
            self.bucket_maximum = 10000.0
            self.restore_rate = 500.0
            self.request_limit = 2500
            self.request_window = 300.0
            self.max_page_size = MAX_PAGE_SIZE
            self.webhook_url: str | None = getattr(self, "webhook_url", None)
            self.duplicate_deliveries = False
            self.legacy_occured_at = False
            self.notify_connect = True
            self.webhook_timeout = 5.0
            self.webhook_retries = 0
            self.webhook_retry_delay = 1.0
            self.default_timezone = "America/Chicago"

    def new_id(self) -> int:
        return next(self.ids)

    def add_account(self, name: str, timezone: str) -> Account:
        with self.lock:
            account = Account(
                id=self.new_id(),
                name=name,
                timezone=timezone,
                maximum_available=self.bucket_maximum,
                restore_rate=self.restore_rate,
                currently_available=self.bucket_maximum,
            )
            self.accounts[account.id] = account
            return account

    def account(self, account_id: str | int) -> Account:
        number = account_id if isinstance(account_id, int) else decode_id(account_id, "Account")
        if number is None or number not in self.accounts:
            raise KeyError(f"no such Jobber account: {account_id}")
        return self.accounts[number]


# ---------------------------------------------------------------------------- cost
def _arguments(node: FieldNode, definition: Any, variables: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for argument in node.arguments or ():
        arg_def = definition.args.get(argument.name.value)
        if arg_def is not None:
            values[argument.name.value] = value_from_ast(argument.value, arg_def.type, variables)
    return values


def _selection_cost(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
) -> int:
    if selection_set is None:
        return 0
    total = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            total += _field_cost(schema, parent, selection, fragments, variables)
        elif isinstance(selection, InlineFragmentNode):
            condition = parent
            if selection.type_condition is not None:
                condition = schema.get_type(selection.type_condition.name.value) or parent  # type: ignore[assignment]
            total += _selection_cost(schema, condition, selection.selection_set, fragments, variables)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                condition = schema.get_type(fragment.type_condition.name.value) or parent  # type: ignore[assignment]
                total += _selection_cost(schema, condition, fragment.selection_set, fragments, variables)
    return total


def _field_cost(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    node: FieldNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
) -> int:
    name = node.name.value
    if name.startswith("__"):
        return 0
    definition = parent.fields.get(name)
    if definition is None:
        return 0
    named = get_named_type(definition.type)
    if not isinstance(named, GraphQLObjectType):
        return 1  # a scalar or an enum
    children = node.selection_set.selections if node.selection_set else ()
    if not named.name.endswith("Connection"):
        return _selection_cost(schema, named, node.selection_set, fragments, variables)
    first = _arguments(node, definition, variables).get("first")
    size = DEFAULT_CONNECTION_SIZE if first is None else max(int(first), 0)
    per_item = 0
    others = 0
    for child in children:
        child_cost = _selection_cost(schema, named, SelectionSetNode(selections=(child,)), fragments, variables)
        if isinstance(child, FieldNode) and child.name.value in ("nodes", "edges"):
            per_item += child_cost
        else:
            others += child_cost
    return size * per_item + others


def requested_cost(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, variables: dict[str, Any]
) -> int:
    """The cost Jobber asks before running a query (module docstring)."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    chosen = next((o for o in operations if o.name and o.name.value == operation_name), operations[0])
    root = schema.mutation_type if chosen.operation.value == "mutation" else schema.query_type
    assert root is not None
    return _selection_cost(schema, root, chosen.selection_set, fragments, variables)


def actual_cost(data: Any) -> int:
    """One per scalar value returned (nulls included)."""
    if isinstance(data, dict):
        return sum(actual_cost(v) for v in data.values())
    if isinstance(data, list):
        return sum(actual_cost(v) for v in data)
    return 1


# ---------------------------------------------------------------------------- schema and resolvers
def _user_node(user: User) -> dict[str, Any]:
    return {
        "id": encode_id("User", user.id),
        "name": {"first": user.first, "last": user.last, "full": f"{user.first} {user.last}".strip()},
        "email": {"raw": user.email},
        "isAccountOwner": user.owner,
    }


def connection(items: list[Any], first: int | None, after: str | None, max_size: int) -> dict[str, Any]:
    if first is not None and first < 0:
        raise GraphQLError("Argument 'first' on Field must be a positive number")
    size = min(max_size if first is None else first, max_size)
    start = _offset(after)
    page = items[start : start + size]
    cursors = [_cursor(start + i + 1) for i in range(len(page))]
    return {
        "nodes": page,
        "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, page, strict=True)],
        "pageInfo": {
            "hasNextPage": start + len(page) < len(items),
            "hasPreviousPage": start > 0,
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
        },
        "totalCount": len(items),
    }


def _user_error(message: str, *path: str) -> dict[str, Any]:
    return {"message": message, "path": list(path)}


@dataclass
class Context:
    state: FakeJobberState
    account: Account


class Resolvers:
    """Query and Mutation fields, resolved against the account of the access token."""

    def __init__(self, state: FakeJobberState) -> None:
        self.state = state

    # -- nodes
    def visit_status(self, visit: Visit) -> str:
        if visit.status:
            return visit.status
        if visit.completed_at is not None:
            return "COMPLETED"
        if visit.start_at is None or visit.end_at is None:
            return "UNSCHEDULED"
        now = datetime.now(UTC)
        if visit.end_at < now:
            return "LATE"
        return "ACTIVE" if visit.start_at <= now else "UPCOMING"

    def visit_node(self, account: Account, visit: Visit, zone: ZoneInfo | None) -> dict[str, Any]:
        users = [_user_node(account.users[u]) for u in visit.user_ids if u in account.users]
        client = account.clients.get(visit.client_id)
        return {
            "id": encode_id("Visit", visit.id),
            "title": visit.title,
            "startAt": iso(visit.start_at, zone),
            "endAt": iso(visit.end_at, zone),
            "allDay": visit.all_day,
            "completedAt": iso(visit.completed_at, zone),
            "visitStatus": self.visit_status(visit),
            "assignedUsers": lambda info, first=None, after=None: connection(users, first, after, 10**6),
            "job": self.job_node(account, visit.job_id),
            "client": self.client_node(client) if client else self.client_stub(visit.client_id),
            "createdAt": iso(visit.created_at, zone),
        }

    @staticmethod
    def job_node(account: Account, job_id: int) -> dict[str, Any] | None:
        if not job_id:
            return None
        return {"id": encode_id("Job", job_id), "title": account.jobs.get(job_id), "jobNumber": job_id}

    @staticmethod
    def client_stub(client_id: int) -> dict[str, Any]:
        return {
            "id": encode_id("Client", client_id),
            "firstName": "",
            "lastName": "",
            "companyName": None,
            "name": "",
            "phones": [],
        }

    @staticmethod
    def client_node(client: Client) -> dict[str, Any]:
        name = f"{client.first_name} {client.last_name}".strip() or (client.company_name or "")
        return {
            "id": encode_id("Client", client.id),
            "firstName": client.first_name,
            "lastName": client.last_name,
            "companyName": client.company_name,
            "name": name,
            "phones": [{**p, "id": encode_id("ClientPhoneNumber", p["id"])} for p in client.phones],
        }

    def assessment_node(self, account: Account, assessment: Assessment) -> dict[str, Any]:
        users = [_user_node(account.users[u]) for u in assessment.user_ids if u in account.users]
        return {
            "id": encode_id("Assessment", assessment.id),
            "startAt": iso(assessment.start_at),
            "endAt": iso(assessment.end_at),
            "assignedUsers": lambda info, first=None, after=None: connection(users, first, after, 10**6),
        }

    def request_node(self, account: Account, request: JobberRequest) -> dict[str, Any]:
        client = account.clients.get(request.client_id)
        notes = [{**n, "id": encode_id("RequestNote", n["id"])} for n in request.notes]
        status = "archived" if request.archived else "assessment_scheduled" if request.assessment else "new"
        return {
            "id": encode_id("Request", request.id),
            "title": request.title,
            "client": self.client_node(client) if client else None,
            "assessment": self.assessment_node(account, request.assessment) if request.assessment else None,
            "requestStatus": status,
            "notes": lambda info, first=None, after=None: connection(notes, first, after, 10**6),
            "createdAt": iso(request.created_at),
        }

    # -- queries
    def account(self, _: Any, info: Any) -> dict[str, Any]:
        account: Account = info.context.account
        return {"id": account.encoded_id, "name": account.name}

    def users(self, _: Any, info: Any, first: int | None = None, after: str | None = None) -> dict[str, Any]:
        account: Account = info.context.account
        nodes = [_user_node(u) for u in sorted(account.users.values(), key=lambda u: u.id)]
        return connection(nodes, first, after, self.state.max_page_size)

    def visits(
        self,
        _: Any,
        info: Any,
        first: int | None = None,
        after: str | None = None,
        filter: dict[str, Any] | None = None,
        timezone: str | None = None,
    ) -> dict[str, Any]:
        account: Account = info.context.account
        zone = None
        if timezone:
            try:
                zone = ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise GraphQLError(f"Invalid timezone: {timezone}") from exc
        window = (filter or {}).get("startAt") or {}
        lower, upper = window.get("after"), window.get("before")
        status = (filter or {}).get("status")
        rows = []
        for visit in account.visits.values():
            if (lower or upper) and visit.start_at is None:
                continue
            if lower and visit.start_at and visit.start_at < lower:
                continue
            if upper and visit.start_at and visit.start_at > upper:
                continue
            if status and self.visit_status(visit) != status:
                continue
            rows.append(visit)
        far = datetime.max.replace(tzinfo=UTC)
        rows.sort(key=lambda v: (v.start_at or far, v.id))
        page = connection(rows, first, after, self.state.max_page_size)
        page["nodes"] = [self.visit_node(account, v, zone) for v in page["nodes"]]
        page["edges"] = [{"cursor": e["cursor"], "node": n} for e, n in zip(page["edges"], page["nodes"], strict=True)]
        return page

    def visit(self, _: Any, info: Any, id: str) -> dict[str, Any] | None:
        account: Account = info.context.account
        number = decode_id(id, "Visit")
        visit = account.visits.get(number) if number is not None else None
        return self.visit_node(account, visit, None) if visit else None

    def clients(
        self, _: Any, info: Any, first: int | None = None, after: str | None = None, searchTerm: str | None = None
    ) -> dict[str, Any]:
        account: Account = info.context.account
        rows = [c for c in account.clients.values() if not searchTerm or _client_matches(c, searchTerm)]
        rows.sort(key=lambda c: c.id)
        return connection([self.client_node(c) for c in rows], first, after, self.state.max_page_size)

    def client(self, _: Any, info: Any, id: str) -> dict[str, Any] | None:
        account: Account = info.context.account
        number = decode_id(id, "Client")
        client = account.clients.get(number) if number is not None else None
        return self.client_node(client) if client else None

    def requests(
        self, _: Any, info: Any, first: int | None = None, after: str | None = None, searchTerm: str | None = None
    ) -> dict[str, Any]:
        account: Account = info.context.account
        term = (searchTerm or "").lower()
        rows = [r for r in account.requests.values() if term in r.title.lower()]
        rows.sort(key=lambda r: r.id)
        return connection([self.request_node(account, r) for r in rows], first, after, self.state.max_page_size)

    def request(self, _: Any, info: Any, id: str) -> dict[str, Any] | None:
        account: Account = info.context.account
        number = decode_id(id, "Request")
        request = account.requests.get(number) if number is not None else None
        return self.request_node(account, request) if request else None

    # -- mutations
    def client_create(self, _: Any, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        account: Account = info.context.account
        first, last = (input.get("firstName") or "").strip(), (input.get("lastName") or "").strip()
        company = (input.get("companyName") or "").strip() or None
        if not (first or last or company):
            return {"client": None, "userErrors": [_user_error("Client must have a name", "input", "firstName")]}
        phones = []
        for index, phone in enumerate(input.get("phones") or []):
            if not _digits(phone.get("number") or ""):
                return {
                    "client": None,
                    "userErrors": [_user_error("Phone number is invalid", "input", "phones", str(index), "number")],
                }
            phones.append(
                {
                    "id": self.state.new_id(),
                    "number": phone["number"],
                    "primary": bool(phone.get("primary")),
                    "description": phone.get("description"),
                }
            )
        if phones and not any(p["primary"] for p in phones):
            phones[0]["primary"] = True
        client = Client(self.state.new_id(), first, last, company, phones)
        account.clients[client.id] = client
        return {"client": self.client_node(client), "userErrors": []}

    def request_create(self, _: Any, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        account: Account = info.context.account
        errors = []
        client_id = input.get("clientId")
        client_number = decode_id(client_id, "Client") if client_id else None
        if not client_id:
            errors.append(_user_error("Client is required", "input", "clientId"))
        elif client_number not in account.clients:
            errors.append(_user_error("Client not found", "input", "clientId"))
        assessment = None
        if input.get("assessment") is not None:
            attributes = input["assessment"]
            start, end = attributes.get("startAt"), attributes.get("endAt")
            if (start is None) != (end is None):
                errors.append(_user_error("Assessment needs both a start and an end", "input", "assessment"))
            elif start is not None and end is not None and end <= start:
                errors.append(_user_error("End must be after start", "input", "assessment", "endAt"))
            user_ids = []
            for index, user_id in enumerate(attributes.get("assignedUserIds") or []):
                number = decode_id(str(user_id), "User")
                if number is None or number not in account.users:
                    errors.append(_user_error("User not found", "input", "assessment", "assignedUserIds", str(index)))
                else:
                    user_ids.append(number)
            assessment = Assessment(self.state.new_id(), start, end, user_ids)
        if errors:
            return {"request": None, "userErrors": errors}
        assert client_number is not None
        request = JobberRequest(self.state.new_id(), input.get("title") or "", client_number, assessment)
        account.requests[request.id] = request
        return {"request": self.request_node(account, request), "userErrors": []}

    def request_create_note(
        self,
        _: Any,
        info: Any,
        requestId: str,
        input: dict[str, Any],
    ) -> dict[str, Any]:
        account: Account = info.context.account
        number = decode_id(requestId, "Request")
        request = account.requests.get(number) if number is not None else None
        if request is None:
            return {"requestNote": None, "userErrors": [_user_error("Request not found", "requestId")]}
        message = (input.get("message") or "").strip()
        if not message:
            return {"requestNote": None, "userErrors": [_user_error("Message can't be blank", "input", "message")]}
        note = {"id": self.state.new_id(), "message": input["message"], "createdAt": iso(datetime.now(UTC))}
        request.notes.append(note)
        return {"requestNote": {**note, "id": encode_id("RequestNote", note["id"])}, "userErrors": []}

    def assessment_edit_schedule(
        self,
        _: Any,
        info: Any,
        assessmentId: str,
        input: dict[str, Any],
    ) -> dict[str, Any]:
        account: Account = info.context.account
        number = decode_id(assessmentId, "Assessment")
        found = next(
            (r.assessment for r in account.requests.values() if r.assessment is not None and r.assessment.id == number),
            None,
        )
        if found is None:
            return {"assessment": None, "userErrors": [_user_error("Assessment not found", "assessmentId")]}
        start = input.get("startAt", found.start_at)
        end = input.get("endAt", found.end_at)
        if start is None or end is None:
            return {"assessment": None, "userErrors": [_user_error("Start and end are required", "input")]}
        if end <= start:
            return {"assessment": None, "userErrors": [_user_error("End must be after start", "input", "endAt")]}
        found.start_at, found.end_at = start, end
        return {"assessment": self.assessment_node(account, found), "userErrors": []}

    def request_archive(self, _: Any, info: Any, requestId: str) -> dict[str, Any]:
        account: Account = info.context.account
        number = decode_id(requestId, "Request")
        request = account.requests.get(number) if number is not None else None
        if request is None:
            return {"request": None, "userErrors": [_user_error("Request not found", "requestId")]}
        if request.archived:
            return {
                "request": self.request_node(account, request),
                "userErrors": [_user_error("Request is already archived", "requestId")],
            }
        request.archived = True
        return {"request": self.request_node(account, request), "userErrors": []}


def _client_matches(client: Client, term: str) -> bool:
    digits = _digits(term)
    if len(digits) >= 3:
        for phone in client.phones:
            number = _digits(phone["number"])
            if digits in number or (len(number) >= 7 and number in digits):
                return True
    lowered = term.lower().strip()
    name = f"{client.first_name} {client.last_name} {client.company_name or ''}".lower()
    return bool(lowered) and not digits and lowered in name


def _scalar(schema: GraphQLSchema, name: str, parse: Callable[[Any], Any], show: Callable[[Any], Any]) -> None:
    """Give a scalar of the SDL its parsing (graphql-core 3.3 reads the coerce_* names, older ones parse_*)."""
    scalar = schema.type_map[name]

    def literal(node: Any, *_: Any) -> Any:
        return parse(getattr(node, "value", None))

    for attribute, function in (
        ("parse_value", parse),
        ("coerce_input_value", parse),
        ("parse_literal", literal),
        ("coerce_input_literal", literal),
        ("serialize", show),
        ("coerce_output_value", show),
    ):
        setattr(scalar, attribute, function)


def build_jobber_schema(resolvers: Resolvers) -> GraphQLSchema:
    schema = build_schema(SDL)

    def parse_encoded(value: Any) -> str:
        if not isinstance(value, str):
            raise GraphQLError(f"EncodedId must be a string: {value!r}")
        return value

    def show_time(value: Any) -> Any:
        return iso(value) if isinstance(value, datetime) else value

    _scalar(schema, "ISO8601DateTime", parse_datetime, show_time)
    _scalar(schema, "EncodedId", parse_encoded, str)
    query, mutation = schema.query_type, schema.mutation_type
    assert query is not None and mutation is not None
    for name in ("account", "users", "visits", "visit", "clients", "client", "requests", "request"):
        query.fields[name].resolve = getattr(resolvers, name)
    mutation.fields["clientCreate"].resolve = resolvers.client_create
    mutation.fields["requestCreate"].resolve = resolvers.request_create
    mutation.fields["requestCreateNote"].resolve = resolvers.request_create_note
    mutation.fields["assessmentEditSchedule"].resolve = resolvers.assessment_edit_schedule
    mutation.fields["requestArchive"].resolve = resolvers.request_archive
    return schema


# ---------------------------------------------------------------------------- webhooks
class Deliverer(threading.Thread):
    """POSTs webhook deliveries one at a time, recording our answer's status and latency."""

    def __init__(self, state: FakeJobberState) -> None:
        super().__init__(name="fake-jobber-webhooks", daemon=True)
        self.state = state
        self.queue: queue.Queue[tuple[Delivery, str] | None] = queue.Queue()
        self.holding = False
        self.held: list[tuple[Delivery, str]] = []

    def put(self, delivery: Delivery, url: str) -> None:
        with self.state.lock:
            self.state.deliveries.append(delivery)
            if self.holding:
                self.held.append((delivery, url))
                return
        self.queue.put((delivery, url))

    def release(self, *, reverse: bool = False, shuffle: bool = False) -> None:
        with self.state.lock:
            held, self.held, self.holding = self.held, [], False
        if reverse:
            held.reverse()
        if shuffle:
            random.shuffle(held)
        for item in held:
            self.queue.put(item)

    def _retry(self, delivery: Delivery, url: str) -> None:
        """Jobber retries a delivery we failed (non-2xx or no answer), up to `webhook_retries` times."""
        with self.state.lock:
            if delivery.attempt > self.state.webhook_retries:
                return
            delay = self.state.webhook_retry_delay
        again = Delivery(
            delivery.topic,
            delivery.account_id,
            delivery.item_id,
            delivery.body,
            delivery.signature,
            attempt=delivery.attempt + 1,
        )
        timer = threading.Timer(delay, self.put, args=(again, url))
        timer.daemon = True
        timer.start()

    def run(self) -> None:
        with httpx.Client(trust_env=False) as client:
            while (item := self.queue.get()) is not None:
                delivery, url = item
                headers = {"Content-Type": "application/json", "X-Jobber-Hmac-SHA256": delivery.signature}
                started = time.perf_counter()
                try:
                    response = client.post(
                        url, content=delivery.body, headers=headers, timeout=self.state.webhook_timeout
                    )
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self.state.lock:
                    delivery.latency = time.perf_counter() - started
                    delivery.sent_at = time.time()
                    delivery.status = status
                if not (isinstance(status, int) and 200 <= status < 300):
                    self._retry(delivery, url)


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# ---------------------------------------------------------------------------- the ASGI app
def _graphql_error(status: int, message: str, code: str | None = None) -> Response:
    error: dict[str, Any] = {"message": message}
    if code:
        error["extensions"] = {"code": code}
    return Response(status, {"errors": [error]})


class FakeJobberApp:
    def __init__(self, state: FakeJobberState, deliverer: Deliverer, notify: Callable[..., None]) -> None:
        self.state = state
        self.deliverer = deliverer
        self.notify = notify
        self.resolvers = Resolvers(state)
        self.schema = build_jobber_schema(self.resolvers)
        self._documents: dict[str, tuple[DocumentNode | None, list[GraphQLError]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive, time.monotonic())
        method, path = request.method, request.path.rstrip("/")
        if method == "GET" and path == "/api/oauth/authorize":
            answer = await self._with_failure("authorize", request, self.authorize)
        elif method == "POST" and path == "/api/oauth/token":
            answer = await self._with_failure("token", request, self.token)
        elif method == "POST" and path == "/api/graphql":
            answer = await self.graphql(request)
        else:
            answer = Response(404, {"error": "not_found", "message": f"no route {method} {path}"})
        if answer.status == 302:
            await send(
                {"type": "http.response.start", "status": 302, "headers": [(b"location", str(answer.payload).encode())]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send_json(send, answer)

    def _failure(self, *operations: str | None) -> Failure | None:
        with self.state.lock:
            for key in (*operations, "*"):
                pending = self.state.failures.get(key) if key else None
                if pending:
                    failure = pending[0]
                    failure.times -= 1
                    if failure.times <= 0:
                        pending.pop(0)
                    return failure
        return None

    async def _with_failure(self, operation: str, request: Request, handler: Callable[[Request], Response]) -> Response:
        failure = self._failure(operation)
        if failure is not None:
            if failure.delay:
                await asyncio.sleep(failure.delay)
            if failure.status:
                default = {"error": "invalid_grant" if failure.status in (400, 401) else "server_error"}
                return Response(failure.status, failure.body if failure.body is not None else default)
        return handler(request)

    # ------------------------------------------------------------------------ OAuth
    def authorize(self, request: Request) -> Response:
        query = {k: v[0] for k, v in parse_qs(request.query_string.decode(), keep_blank_values=True).items()}
        if query.get("client_id") != self.state.client_id:
            return Response(400, {"error": "invalid_client", "error_description": "Unknown client_id"})
        if query.get("response_type", "code") != "code" or not query.get("redirect_uri"):
            return Response(400, {"error": "invalid_request"})
        with self.state.lock:
            if self.state.consenting_account is not None:
                account = self.state.accounts[self.state.consenting_account]
            else:
                account = self.state.add_account(
                    f"Jobber account {len(self.state.accounts) + 1}", self.state.default_timezone
                )
            code = self.issue_code(account.id, query["redirect_uri"])
        return Response(302, f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}")

    def issue_code(self, account_id: int, redirect_uri: str = "") -> str:
        code = secrets.token_urlsafe(24)
        with self.state.lock:
            self.state.codes[code] = {"account": account_id, "redirect_uri": redirect_uri}
        return code

    def _grant(self, account: Account) -> dict[str, str]:
        now = int(time.time())
        jti = secrets.token_hex(12)
        exp = now + int(self.state.access_ttl)
        self.state.access_tokens[jti] = {"account": account.id, "exp": exp, "revoked": False}
        claims = {
            "account_id": account.encoded_id,
            "client_id": self.state.client_id,
            "iat": now,
            "exp": exp,
            "jti": jti,
        }
        refresh = secrets.token_hex(20)
        self.state.refresh_tokens[refresh] = {"account": account.id, "used": False, "revoked": False}
        return {"access_token": jwt.encode(claims, self.state.jwt_secret, algorithm="HS256"), "refresh_token": refresh}

    def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.query_string.decode(), keep_blank_values=True).items()}
        if request.body:
            form.update({k: v[0] for k, v in parse_qs(request.body.decode(), keep_blank_values=True).items()})
        if form.get("client_id") != self.state.client_id or form.get("client_secret") != self.state.client_secret:
            return Response(401, {"error": "invalid_client"})
        connected: Account | None = None
        with self.state.lock:
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                grant = self.state.codes.pop(form.get("code", ""), None)
                if grant is None or (grant["redirect_uri"] and grant["redirect_uri"] != form.get("redirect_uri")):
                    return Response(401, {"error": "invalid_grant"})
                account = self.state.accounts[grant["account"]]
                if not account.connected and self.state.notify_connect:
                    connected = account
                account.connected = True
                answer = self._grant(account)
            elif grant_type == "refresh_token":
                known = self.state.refresh_tokens.get(form.get("refresh_token", ""))
                if known is None:
                    return Response(401, {"error": "invalid_grant"})
                account = self.state.accounts[known["account"]]
                if known["used"] or known["revoked"] or not account.connected:
                    account.refused_refreshes += 1
                    return Response(401, {"error": "invalid_grant"})
                known["used"] = True
                account.refreshes += 1
                answer = self._grant(account)
            else:
                return Response(400, {"error": "unsupported_grant_type"})
        if connected is not None:
            self.notify("APP_CONNECT", connected, connected.encoded_id)
        return Response(200, answer)

    def authenticate(self, request: Request) -> Account | None:
        header = request.headers.get(b"authorization", b"").decode()
        if not header.startswith("Bearer "):
            return None
        try:
            claims = jwt.decode(header.removeprefix("Bearer ").strip(), self.state.jwt_secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        with self.state.lock:
            record = self.state.access_tokens.get(str(claims.get("jti")))
            if record is None or record["revoked"] or record["exp"] <= time.time():
                return None
            account = self.state.accounts.get(record["account"])
            return account if account is not None and account.connected else None

    # ------------------------------------------------------------------------ GraphQL
    def _document(self, query: str) -> tuple[DocumentNode | None, list[GraphQLError]]:
        cached = self._documents.get(query)
        if cached is None:
            try:
                document = parse(query)
            except GraphQLError as exc:
                cached = (None, [exc])
            else:
                cached = (document, list(validate(self.schema, document)))
            if len(self._documents) > 500:
                self._documents.clear()
            self._documents[query] = cached
        return cached

    def _operation_name(self, query: Any) -> str | None:
        """The name of the query's only named operation (when the body has no operationName)."""
        document = self._document(query)[0] if isinstance(query, str) and query.strip() else None
        if document is None:
            return None
        names = [d.name.value for d in document.definitions if isinstance(d, OperationDefinitionNode) and d.name]
        return names[0] if len(names) == 1 else None

    def _record(self, call: Call) -> None:
        with self.state.lock:
            self.state.calls.append(call)

    async def graphql(self, request: Request) -> Response:
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            return _graphql_error(400, "Request body must be JSON")
        if not isinstance(body, dict):
            return _graphql_error(400, "Request body must be a JSON object")
        query = body.get("query")
        variables = body.get("variables") or {}
        operation = body.get("operationName")
        call = Call(
            operation=operation or self._operation_name(query), account_id=None, variables=variables, status=200
        )
        failure = self._failure(call.operation, "graphql")
        if failure is not None:
            if failure.delay:
                await asyncio.sleep(failure.delay)
            if failure.status:
                call.status = failure.status
                self._record(call)
                if failure.body is not None:
                    return Response(failure.status, failure.body)
                return _graphql_error(failure.status, "Unauthorized" if failure.status == 401 else "Internal error")
        version = request.headers.get(b"x-jobber-graphql-version", b"").decode()
        if version not in self.state.supported_versions:
            call.status = 400
            self._record(call)
            return _graphql_error(400, f"Unsupported or missing X-JOBBER-GRAPHQL-VERSION: {version!r}")
        account = self.authenticate(request)
        if account is None:
            call.status = 401
            self._record(call)
            return _graphql_error(401, "Unauthorized", "UNAUTHENTICATED")
        call.account_id = account.encoded_id
        with self.state.lock:
            now = time.monotonic()
            times = account.request_times
            while times and times[0] <= now - self.state.request_window:
                times.popleft()
            times.append(now)
            if len(times) > self.state.request_limit:
                call.status = 429
                self.state.calls.append(call)
                return _graphql_error(429, "Too many requests", "TOO_MANY_REQUESTS")
        answer = self._run(account, query, variables, operation, call, version)
        self._record(call)
        return answer

    def _run(
        self, account: Account, query: Any, variables: Any, operation: str | None, call: Call, version: str
    ) -> Response:
        versioning = {"version": version}

        def answer(payload: dict[str, Any], requested: int, actual: int) -> Response:
            with self.state.lock:
                status = account.throttle_status()
            cost = {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": status}
            return Response(200, {**payload, "extensions": {"cost": cost, "versioning": versioning}})

        if not isinstance(query, str) or not query.strip():
            call.errors.append("No query string was present")
            return answer({"errors": [{"message": "No query string was present"}]}, 0, 0)
        if not isinstance(variables, dict):
            call.errors.append("variables must be an object")
            return answer({"errors": [{"message": "Variables must be a JSON object"}]}, 0, 0)
        document, errors = self._document(query)
        if document is None or errors:
            call.errors.extend(e.message for e in errors)
            return answer({"errors": [e.formatted for e in errors]}, 0, 0)
        try:
            cost = requested_cost(self.schema, document, operation, variables)
        except (GraphQLError, StopIteration, IndexError, TypeError, ValueError):
            cost = 0  # the execution below reports what is wrong with the variables
        call.requested_cost = cost
        with self.state.lock:
            if cost > account.maximum_available:
                # Never affordable: waiting would not help (a client that waits on THROTTLED would hang).
                message = f"Query cost {cost} exceeds the maximum available {int(account.maximum_available)}"
                call.errors.append(message)
                return answer({"errors": [{"message": message, "extensions": {"code": "MAX_COST_EXCEEDED"}}]}, cost, 0)
            if account.restore() < cost:
                call.throttled = True
                call.errors.append("Throttled")
                return answer({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]}, cost, 0)
            account.currently_available -= cost
            result = execute(
                self.schema,
                document,
                context_value=Context(self.state, account),
                variable_values=variables,
                operation_name=operation,
            )
            assert isinstance(result, ExecutionResult)
            actual = min(actual_cost(result.data), cost) if result.data is not None else 0
            account.currently_available = min(account.maximum_available, account.currently_available + cost - actual)
        payload: dict[str, Any] = {}
        if result.errors:
            call.errors.extend(e.message for e in result.errors)
            payload["errors"] = [e.formatted for e in result.errors]
        if result.data is not None or not result.errors:
            payload["data"] = result.data
        return answer(payload, cost, actual)


# ---------------------------------------------------------------------------- what tests use
class FakeJobber:
    """The fake server in a thread, and what tests do with it. Ids given and taken are encoded ids."""

    def __init__(
        self,
        port: int = 0,
        *,
        webhook_url: str | None = None,
        client_id: str = "fake-jobber-client-id",
        client_secret: str = "fake-jobber-client-secret",  # noqa: S107 - a fake's
    ) -> None:
        self.state = FakeJobberState(client_id, client_secret)
        self.state.webhook_url = webhook_url
        self.deliverer = Deliverer(self.state)
        self.app = FakeJobberApp(self.state, self.deliverer, self._notify)
        self.server = ThreadedServer(self.app, port=port)
        self.base_url = self.server.url
        self.api_url = f"{self.base_url}/api/graphql"
        self.oauth_url = f"{self.base_url}/api/oauth"
        self.client_id = client_id
        self.client_secret = client_secret
        self.version = DEFAULT_VERSION

    def start(self) -> FakeJobber:
        self.deliverer.start()
        self.server.start()
        return self

    def stop(self) -> None:
        self.deliverer.queue.put(None)
        self.server.stop()
        self.deliverer.join(2)

    def __enter__(self) -> FakeJobber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def settings(self) -> dict[str, str]:
        """Settings that point an `nmc` process at this fake."""
        return {
            "JOBBER_API_URL": self.api_url,
            "JOBBER_OAUTH_URL": self.oauth_url,
            "JOBBER_CLIENT_ID": self.client_id,
            "JOBBER_CLIENT_SECRET": self.client_secret,
            "JOBBER_GRAPHQL_VERSION": self.version,
        }

    def reset(self) -> None:
        """Forget everything (accounts, tokens, failures, calls, deliveries); knobs back to defaults."""
        with self.state.lock:
            self.deliverer.held.clear()
            self.deliverer.holding = False
            webhook_url = self.state.webhook_url
            self.state.reset()
            self.state.webhook_url = webhook_url

    # ------------------------------------------------------------------------ knobs
    @property
    def webhook_url(self) -> str | None:
        return self.state.webhook_url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self.state.webhook_url = url

    def set_access_ttl(self, seconds: float) -> None:
        """Lifetime of access tokens issued from now on (default 3600)."""
        self.state.access_ttl = seconds

    def set_bucket(
        self, account: str | None = None, *, maximum: float | None = None, restore_rate: float | None = None
    ) -> None:
        """The cost bucket of one account, or of all (existing and future) when `account` is None."""
        with self.state.lock:
            targets = [self.state.account(account)] if account else list(self.state.accounts.values())
            if account is None:
                self.state.bucket_maximum = maximum if maximum is not None else self.state.bucket_maximum
                self.state.restore_rate = restore_rate if restore_rate is not None else self.state.restore_rate
            for target in targets:
                target.restore()
                if maximum is not None:
                    target.maximum_available = maximum
                    target.currently_available = min(target.currently_available, maximum)
                if restore_rate is not None:
                    target.restore_rate = restore_rate

    def drain_bucket(self, account: str, to: float = 0.0) -> None:
        """Empty the account's cost bucket (down to `to`): its next queries are THROTTLED until it refills."""
        with self.state.lock:
            target = self.state.account(account)
            target.restore()
            target.currently_available = to

    def fill_bucket(self, account: str) -> None:
        with self.state.lock:
            target = self.state.account(account)
            target.restore()
            target.currently_available = target.maximum_available

    def set_request_limit(self, limit: int, window: float = 300.0) -> None:
        """More than `limit` GraphQL requests within `window` seconds for one account → 429."""
        with self.state.lock:
            self.state.request_limit, self.state.request_window = limit, window

    def fail(
        self, operation: str, status: int | None = None, *, delay: float = 0.0, times: int = 1, body: Any = None
    ) -> None:
        """The next `times` requests of `operation` fail with `status` (and/or wait `delay` seconds first).

        `operation` is a GraphQL operationName (`Visits`, `RequestCreate` …), `graphql` (any GraphQL request),
        `token`, `authorize`, or `*`. `body` replaces the default error body."""
        with self.state.lock:
            self.state.failures.setdefault(operation, []).append(Failure(status, delay, times, body))

    def heal(self) -> None:
        with self.state.lock:
            self.state.failures.clear()

    def expire_tokens(self, account: str | None = None) -> None:
        """Access tokens issued so far (to `account`, or to all) expire now; refresh tokens still work."""
        with self.state.lock:
            number = self.state.account(account).id if account else None
            for record in self.state.access_tokens.values():
                if number is None or record["account"] == number:
                    record["exp"] = 0

    def revoke_tokens(self, account: str) -> None:
        """Every access and refresh token of `account` is refused from now on (no webhook)."""
        with self.state.lock:
            number = self.state.account(account).id
            for records in (self.state.access_tokens, self.state.refresh_tokens):
                for record in records.values():
                    if record["account"] == number:
                        record["revoked"] = True

    def hold_deliveries(self) -> None:
        """Webhooks wait (recorded, unsent) until `release_deliveries`."""
        with self.state.lock:
            self.deliverer.holding = True

    def release_deliveries(self, *, reverse: bool = False, shuffle: bool = False) -> None:
        """Send the held webhooks, in order, reversed or shuffled (out of order)."""
        self.deliverer.release(reverse=reverse, shuffle=shuffle)

    def set_webhook_retries(self, retries: int, *, delay: float = 1.0) -> None:
        """A delivery we fail (non-2xx, no answer) is sent again up to `retries` times, `delay` s apart."""
        with self.state.lock:
            self.state.webhook_retries, self.state.webhook_retry_delay = retries, delay

    def set_webhook_timeout(self, seconds: float) -> None:
        """How long the fake waits for our answer to a delivery (default 5 s); beyond it: `ReadTimeout`."""
        self.state.webhook_timeout = seconds

    def set_duplicate_deliveries(self, enabled: bool = True) -> None:
        """Each webhook is POSTed twice (at-least-once)."""
        self.state.duplicate_deliveries = enabled

    def set_legacy_occured_at(self, enabled: bool = True) -> None:
        """Payloads spell `occuredAt` (older Jobber apps) instead of `occurredAt`."""
        self.state.legacy_occured_at = enabled

    # ------------------------------------------------------------------------ accounts, OAuth
    def add_account(self, name: str = "Jobber account", *, timezone: str = "America/Chicago") -> str:
        """A Jobber account (not yet connected to our app); its encoded id."""
        return self.state.add_account(name, timezone).encoded_id

    def consent_as(self, account: str | None) -> None:
        """The account that the next authorizations consent as (None: a new account per authorization)."""
        with self.state.lock:
            self.state.consenting_account = self.state.account(account).id if account else None

    def issue_code(self, account: str, redirect_uri: str = "") -> str:
        """An authorization code as if the account had consented (for a callback built by hand)."""
        return self.app.issue_code(self.state.account(account).id, redirect_uri)

    def grant_tokens(self, account: str) -> dict[str, str]:
        """`{access_token, refresh_token}` for `account` without the OAuth round trip (it becomes connected)."""
        with self.state.lock:
            target = self.state.account(account)
            target.connected = True
            return self.app._grant(target)

    def disconnect_app(self, account: str, *, notify: bool = True) -> None:
        """The owner disconnected our app in Jobber: tokens die at once, then APP_DISCONNECT is delivered."""
        with self.state.lock:
            target = self.state.account(account)
            self.revoke_tokens(account)
            target.connected = False
        if notify:
            self._notify("APP_DISCONNECT", target, target.encoded_id)

    # ------------------------------------------------------------------------ arranging
    def add_user(
        self, account: str, name: str = "Team Member", email: str | None = None, *, owner: bool = False
    ) -> str:
        first, _, last = name.partition(" ")
        with self.state.lock:
            target = self.state.account(account)
            user = User(self.state.new_id(), first, last, email or f"{first.lower()}.{target.id}@example.com", owner)
            target.users[user.id] = user
            return encode_id("User", user.id)

    def add_client(
        self, account: str, first_name: str = "Pat", last_name: str = "Client", phones: Iterable[str] = ()
    ) -> str:
        with self.state.lock:
            target = self.state.account(account)
            numbers = [
                {"id": self.state.new_id(), "number": p, "primary": i == 0, "description": "Main"}
                for i, p in enumerate(phones)
            ]
            client = Client(self.state.new_id(), first_name, last_name, None, numbers)
            target.clients[client.id] = client
            return encode_id("Client", client.id)

    def _new_visit(
        self,
        target: Account,
        *,
        start: datetime | date | None,
        end: datetime | date | None,
        title: str,
        user_ids: Iterable[str],
        job_id: int | None = None,
        client_id: str | None = None,
        status: str | None = None,
    ) -> Visit:
        all_day = isinstance(start, date) and not isinstance(start, datetime)
        start_at, end_at = self._times(target, start, end)
        users = [n for u in user_ids if (n := decode_id(u, "User")) is not None]
        if job_id is None:
            job_id = self.state.new_id()
            target.jobs[job_id] = title
        client_number = decode_id(client_id, "Client") if client_id else None
        if client_number is None:
            client_number = decode_id(self.add_client(target.encoded_id), "Client")
        assert client_number is not None
        visit = Visit(
            self.state.new_id(), title, start_at, end_at, all_day, users, job_id, client_number, status=status
        )
        target.visits[visit.id] = visit
        self.state.visit_accounts[visit.id] = target.id
        return visit

    @staticmethod
    def _times(
        target: Account, start: datetime | date | None, end: datetime | date | None
    ) -> tuple[datetime | None, datetime | None]:
        """All-day visits (dates): the local day(s) in the account's zone, 00:00 to 23:59:59 (unconfirmed)."""
        if start is None:
            return None, None
        if isinstance(start, datetime):
            assert isinstance(end, datetime), "a timed visit needs an end datetime"
            return _aware(start), _aware(end)
        zone = ZoneInfo(target.timezone)
        last = end if isinstance(end, date) and not isinstance(end, datetime) else start
        begin = datetime.combine(start, datetime.min.time(), tzinfo=zone)
        finish = datetime.combine(last, datetime.max.time().replace(microsecond=0), tzinfo=zone)
        return begin.astimezone(UTC), finish.astimezone(UTC)

    def add_visit(
        self,
        account: str,
        *,
        start: datetime | date | None,
        end: datetime | date | None = None,
        title: str = "Visit",
        user_ids: Iterable[str] = (),
        client_id: str | None = None,
        status: str | None = None,
        notify: bool = True,
    ) -> str:
        """A visit (datetimes; a `date` makes it all-day; `start=None` unscheduled); VISIT_CREATE unless not
        `notify`. Its encoded id."""
        with self.state.lock:
            target = self.state.account(account)
            visit = self._new_visit(
                target, start=start, end=end, title=title, user_ids=user_ids, client_id=client_id, status=status
            )
        if notify:
            self._notify("VISIT_CREATE", target, encode_id("Visit", visit.id))
        return encode_id("Visit", visit.id)

    def add_recurring_visits(
        self,
        account: str,
        count: int,
        *,
        first_start: datetime,
        duration: timedelta = timedelta(hours=1),
        every: timedelta = timedelta(days=7),
        title: str = "Recurring visit",
        user_ids: Iterable[str] = (),
        notify: bool = True,
    ) -> list[str]:
        """A job with `count` visits; only the first sends VISIT_CREATE (as Jobber does)."""
        users = list(user_ids)
        with self.state.lock:
            target = self.state.account(account)
            job_id = self.state.new_id()
            target.jobs[job_id] = title
            client_id = self.add_client(account)
            visits = [
                self._new_visit(
                    target,
                    start=first_start + n * every,
                    end=first_start + n * every + duration,
                    title=title,
                    user_ids=users,
                    job_id=job_id,
                    client_id=client_id,
                )
                for n in range(count)
            ]
        ids = [encode_id("Visit", v.id) for v in visits]
        if notify and ids:
            self._notify("VISIT_CREATE", target, ids[0])
        return ids

    def _visit(self, visit_id: str) -> tuple[Account, Visit]:
        number = decode_id(visit_id, "Visit")
        if number is None or number not in self.state.visit_accounts:
            raise KeyError(f"no such visit: {visit_id}")
        target = self.state.accounts[self.state.visit_accounts[number]]
        if number not in target.visits:
            raise KeyError(f"visit deleted: {visit_id}")
        return target, target.visits[number]

    def update_visit(
        self,
        visit_id: str,
        *,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
        unschedule: bool = False,
        title: str | None = None,
        user_ids: Iterable[str] | None = None,
        status: str | None = None,
        notify: bool = True,
    ) -> None:
        """Move, retitle, reassign, unschedule or set the status (e.g. CANCELLED) of a visit; VISIT_UPDATE."""
        with self.state.lock:
            target, visit = self._visit(visit_id)
            if unschedule:
                visit.start_at, visit.end_at, visit.all_day = None, None, False
            elif start is not None:
                visit.all_day = isinstance(start, date) and not isinstance(start, datetime)
                visit.start_at, visit.end_at = self._times(target, start, end)
            if title is not None:
                visit.title = title
            if user_ids is not None:
                visit.user_ids = [n for u in user_ids if (n := decode_id(u, "User")) is not None]
            if status is not None:
                visit.status = status
        if notify:
            self._notify("VISIT_UPDATE", target, visit_id)

    def complete_visit(self, visit_id: str, *, notify: bool = True) -> None:
        with self.state.lock:
            target, visit = self._visit(visit_id)
            visit.completed_at = datetime.now(UTC)
            visit.status = None
        if notify:
            self._notify("VISIT_COMPLETE", target, visit_id)

    def delete_visit(self, visit_id: str, *, notify: bool = True) -> None:
        with self.state.lock:
            target, visit = self._visit(visit_id)
            del target.visits[visit.id]
        if notify:
            self._notify("VISIT_DESTROY", target, visit_id)

    def seed_visits(
        self,
        account: str,
        count: int,
        user_ids: Iterable[str],
        start: datetime,
        days: int,
        *,
        duration: timedelta = timedelta(hours=1),
    ) -> list[str]:
        """`count` visits spread over `days` days from `start` (between its hour and 8 h later), round-robin
        over the users, without webhooks. Fast: for benchmarks."""
        users = [n for u in user_ids if (n := decode_id(u, "User")) is not None] or [0]
        per_day = max(1, -(-count // max(days, 1)))
        slot = timedelta(hours=8) / per_day
        ids = []
        with self.state.lock:
            target = self.state.account(account)
            client = decode_id(self.add_client(account, "Seeded", "Client", ["+15550000000"]), "Client")
            assert client is not None
            job_id = self.state.new_id()
            target.jobs[job_id] = "Seeded job"
            begin = _aware(start)
            for n in range(count):
                day, index = divmod(n, per_day)
                visit_start = begin + timedelta(days=day) + index * slot
                visit = Visit(
                    self.state.new_id(),
                    f"Seeded visit {n + 1}",
                    visit_start,
                    visit_start + duration,
                    False,
                    [users[n % len(users)]] if users != [0] else [],
                    job_id,
                    client,
                )
                target.visits[visit.id] = visit
                self.state.visit_accounts[visit.id] = target.id
                ids.append(encode_id("Visit", visit.id))
        return ids

    # ------------------------------------------------------------------------ webhooks
    def _notify(self, topic: str, account: Account, item_id: str) -> None:
        url = self.state.webhook_url
        if not url:
            return
        stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        spelled = "occuredAt" if self.state.legacy_occured_at else "occurredAt"
        event = {
            "topic": topic,
            "appId": self.client_id,
            "accountId": account.encoded_id,
            "itemId": item_id,
            spelled: stamp,
        }
        body = json.dumps({"data": {"webHookEvent": event}}, separators=(",", ":")).encode()
        copies = 2 if self.state.duplicate_deliveries else 1
        for _ in range(copies):
            delivery = Delivery(topic, account.encoded_id, item_id, body, sign(body, self.client_secret))
            self.deliverer.put(delivery, url)

    def send_webhook(self, topic: str, account: str, item_id: str) -> None:
        """Deliver any topic (e.g. REQUEST_CREATE, which we must accept and ignore)."""
        with self.state.lock:
            target = self.state.account(account)
        self._notify(topic, target, item_id)

    def deliveries(self, topic: str | None = None) -> list[Delivery]:
        with self.state.lock:
            return [d for d in self.state.deliveries if topic is None or d.topic == topic]

    def wait_for_deliveries(self, count: int, *, timeout: float = 5.0, topic: str | None = None) -> list[Delivery]:
        """Block until `count` deliveries (of `topic`) have been answered (or failed); those deliveries."""
        deadline = time.monotonic() + timeout
        while True:
            answered = [d for d in self.deliveries(topic) if d.status is not None]
            if len(answered) >= count or time.monotonic() > deadline:
                return answered
            time.sleep(0.01)

    # ------------------------------------------------------------------------ inspecting
    def accounts(self) -> list[str]:
        with self.state.lock:
            return [a.encoded_id for a in self.state.accounts.values()]

    def is_connected(self, account: str) -> bool:
        with self.state.lock:
            return self.state.account(account).connected

    def refresh_count(self, account: str) -> int:
        """Successful refreshes of the account's tokens."""
        with self.state.lock:
            return self.state.account(account).refreshes

    def refused_refresh_count(self, account: str) -> int:
        """Refreshes refused for the account (a rotated-away, revoked or disconnected refresh token)."""
        with self.state.lock:
            return self.state.account(account).refused_refreshes

    def bucket(self, account: str) -> dict[str, Any]:
        """The account's throttleStatus now."""
        with self.state.lock:
            return self.state.account(account).throttle_status()

    def calls(self, operation: str | None = None, *, account: str | None = None) -> list[Call]:
        with self.state.lock:
            return [
                c
                for c in self.state.calls
                if (operation is None or c.operation == operation) and (account is None or c.account_id == account)
            ]

    def call_count(self, operation: str | None = None, *, account: str | None = None) -> int:
        return len(self.calls(operation, account=account))

    def visits(self, account: str) -> list[dict[str, Any]]:
        """The account's visits as a `Visits` node reads (times in UTC)."""
        with self.state.lock:
            target = self.state.account(account)
            nodes = [self.app.resolvers.visit_node(target, v, None) for v in target.visits.values()]
        for node in nodes:
            node["assignedUsers"] = [u["id"] for u in node["assignedUsers"](None)["nodes"]]
        return nodes

    def clients(self, account: str) -> list[dict[str, Any]]:
        """Clients: `{id, firstName, lastName, companyName, name, phones: [{id, number, primary, …}]}`."""
        with self.state.lock:
            target = self.state.account(account)
            return [Resolvers.client_node(c) for c in target.clients.values()]

    def requests(self, account: str, *, include_archived: bool = True) -> list[dict[str, Any]]:
        """Requests created (by us): `{id, title, clientId, archived, notes: [message…],
        assessment: {id, startAt, endAt, assignedUserIds} | None}` (times as datetimes in UTC)."""
        with self.state.lock:
            target = self.state.account(account)
            rows = []
            for request in target.requests.values():
                if request.archived and not include_archived:
                    continue
                assessment = request.assessment
                rows.append(
                    {
                        "id": encode_id("Request", request.id),
                        "title": request.title,
                        "clientId": encode_id("Client", request.client_id),
                        "archived": request.archived,
                        "notes": [n["message"] for n in request.notes],
                        "assessment": None
                        if assessment is None
                        else {
                            "id": encode_id("Assessment", assessment.id),
                            "startAt": assessment.start_at,
                            "endAt": assessment.end_at,
                            "assignedUserIds": [encode_id("User", u) for u in assessment.user_ids],
                        },
                    }
                )
            return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake Jobber OAuth + GraphQL API + webhooks")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--webhook-url", default=None)
    args = parser.parse_args()
    with FakeJobber(port=args.port, webhook_url=args.webhook_url) as fake:
        print(f"READY {fake.base_url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()

"""The fake Jobber speaks the wire contract (providers.md, the shared Jobber contract) over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import jwt
import pytest

from tests.fakes.jobber import FakeJobber, decode_id

VISITS = """query Visits($first:Int!,$after:String,$from:ISO8601DateTime!,$to:ISO8601DateTime!,$timezone:String){
  visits(first:$first, after:$after, filter:{startAt:{after:$from, before:$to}}, timezone:$timezone){
    nodes{ id title startAt endAt allDay completedAt visitStatus assignedUsers{ nodes{ id } } job{ id } client{ id } }
    pageInfo{ hasNextPage endCursor } } }"""
VISIT = """query Visit($id:EncodedId!){ visit(id:$id){ id title startAt endAt allDay completedAt visitStatus
  assignedUsers{ nodes{ id } } job{ id } client{ id } } }"""
USERS = """query Users($first:Int!,$after:String){ users(first:$first, after:$after){
  nodes{ id name{ full } email{ raw } } pageInfo{ hasNextPage endCursor } } }"""
ACCOUNT = "query Account { account { id name } }"
CLIENTS_BY_PHONE = (
    "query ClientsByPhone($term:String!){ clients(first:5, searchTerm:$term){ nodes{ id phones{ number } } } }"
)
CLIENT_CREATE = """mutation ClientCreate($input:ClientCreateInput!){ clientCreate(input:$input){ client{ id }
  userErrors{ message path } } }"""
REQUEST_CREATE = """mutation RequestCreate($input:RequestCreateInput!){ requestCreate(input:$input){
  request{ id title assessment{ id startAt endAt } } userErrors{ message path } } }"""
REQUESTS_BY_TERM = """query RequestsByTerm($term:String!){ requests(first:5, searchTerm:$term){
  nodes{ id title assessment{ id startAt endAt } } } }"""
REQUEST_NOTE = """mutation RequestCreateNote($requestId:EncodedId!,$input:RequestCreateNoteInput!){
  requestCreateNote(requestId:$requestId, input:$input){ requestNote{ id } userErrors{ message path } } }"""
EDIT_SCHEDULE = """mutation AssessmentEditSchedule($assessmentId:EncodedId!,$input:AssessmentEditScheduleInput!){
  assessmentEditSchedule(assessmentId:$assessmentId, input:$input){ assessment{ id startAt endAt }
  userErrors{ message path } } }"""
ARCHIVE = """mutation RequestArchive($requestId:EncodedId!){ requestArchive(requestId:$requestId){ request{ id }
  userErrors{ message path } } }"""
REDIRECT = "http://127.0.0.1:9/oauth/jobber/callback"


@pytest.fixture(scope="module")
def jobber() -> Iterator[FakeJobber]:
    with FakeJobber() as fake:
        yield fake


@pytest.fixture
def fake(jobber: FakeJobber) -> FakeJobber:
    jobber.reset()
    return jobber


def connect(fake: FakeJobber, account: str) -> dict[str, str]:
    """The OAuth round trip as our callback does it: authorize (302 with code+state), then the code exchange."""
    fake.consent_as(account)
    answer = httpx.get(
        f"{fake.oauth_url}/authorize",
        params={"client_id": fake.client_id, "redirect_uri": REDIRECT, "response_type": "code", "state": "st-1"},
    )
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT and query["state"] == ["st-1"]
    tokens = httpx.post(
        f"{fake.oauth_url}/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
            "redirect_uri": REDIRECT,
        },
    )
    assert tokens.status_code == 200
    return tokens.json()


def refresh(fake: FakeJobber, refresh_token: str) -> httpx.Response:
    return httpx.post(
        f"{fake.oauth_url}/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
        },
    )


def gql(
    fake: FakeJobber, token: str, query: str, variables: dict[str, Any] | None = None, *, version: str | None = None
) -> httpx.Response:
    operation = query.split("(")[0].split("{")[0].split()[1]
    headers = {"Authorization": f"Bearer {token}", "X-JOBBER-GRAPHQL-VERSION": version or fake.version}
    body = {"query": query, "variables": variables or {}, "operationName": operation}
    return httpx.post(fake.api_url, json=body, headers=headers)


def test_oauth_code_exchange_and_rotating_refresh_tokens(fake: FakeJobber) -> None:
    account = fake.add_account("Acme Plumbing")
    tokens = connect(fake, account)
    assert set(tokens) == {"access_token", "refresh_token"}
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["account_id"] == account
    assert 3590 <= claims["exp"] - datetime.now(UTC).timestamp() <= 3600
    assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "HS256"

    renewed = refresh(fake, tokens["refresh_token"])
    assert renewed.status_code == 200 and renewed.json()["refresh_token"] != tokens["refresh_token"]
    reused = refresh(fake, tokens["refresh_token"])  # the old one is refused at once
    assert reused.status_code == 401 and reused.json() == {"error": "invalid_grant"}
    assert refresh(fake, renewed.json()["refresh_token"]).status_code == 200
    assert fake.refresh_count(account) == 2 and fake.refused_refresh_count(account) == 1
    wrong_secret = httpx.post(
        f"{fake.oauth_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": "x", "client_id": fake.client_id, "client_secret": "no"},
    )
    assert wrong_secret.status_code == 401


def test_expired_revoked_and_unknown_tokens_are_401(fake: FakeJobber) -> None:
    account = fake.add_account()
    tokens = connect(fake, account)
    assert gql(fake, tokens["access_token"], ACCOUNT).json()["data"]["account"]["id"] == account
    assert gql(fake, "not-a-jwt", ACCOUNT).status_code == 401
    fake.expire_tokens(account)
    assert gql(fake, tokens["access_token"], ACCOUNT).status_code == 401
    fresh = refresh(fake, tokens["refresh_token"]).json()
    assert gql(fake, fresh["access_token"], ACCOUNT).status_code == 200
    fake.set_access_ttl(1)
    short = refresh(fake, fresh["refresh_token"]).json()
    exp = jwt.decode(short["access_token"], options={"verify_signature": False})["exp"]
    assert exp - datetime.now(UTC).timestamp() <= 1


def test_version_header_is_required_and_echoed(fake: FakeJobber) -> None:
    tokens = connect(fake, fake.add_account())
    missing = httpx.post(
        fake.api_url, json={"query": ACCOUNT}, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert missing.status_code == 400
    assert fake.calls("Account")[0].status == 400  # named from the query when the body has no operationName
    assert gql(fake, tokens["access_token"], ACCOUNT, version="1999-01-01").status_code == 400
    answer = gql(fake, tokens["access_token"], ACCOUNT, version="2025-01-20").json()
    assert answer["extensions"]["versioning"] == {"version": "2025-01-20"}


def test_visits_pages_with_cursors_window_and_timezone(fake: FakeJobber) -> None:
    account = fake.add_account(timezone="America/Chicago")
    ann = fake.add_user(account, "Ann Smith")
    token = connect(fake, account)["access_token"]
    start = datetime(2030, 3, 4, 14, 0, tzinfo=UTC)
    seeded = fake.seed_visits(account, 25, [ann], start, 5)
    fake.add_visit(account, start=start + timedelta(days=90), end=start + timedelta(days=90, hours=1))  # outside
    unscheduled = fake.add_visit(account, start=None)
    all_day = fake.add_visit(account, start=date(2030, 3, 5), title="Boiler day", user_ids=[ann])
    variables = {
        "first": 10,
        "from": start.isoformat(),
        "to": (start + timedelta(days=30)).isoformat(),
        "timezone": "America/Chicago",
    }
    seen: list[dict[str, Any]] = []
    after = None
    pages = 0
    while True:
        body = gql(fake, token, VISITS, {**variables, "after": after}).json()
        page = body["data"]["visits"]
        seen.extend(page["nodes"])
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 3 and len(seen) == 26
    ids = [n["id"] for n in seen]
    assert set(seeded) <= set(ids) and all_day in ids and unscheduled not in ids
    assert len(set(ids)) == len(ids)
    first = next(n for n in seen if n["id"] == seeded[0])
    assert first["startAt"] == "2030-03-04T08:00:00-06:00" and first["visitStatus"] == "UPCOMING"
    assert first["assignedUsers"]["nodes"] == [{"id": ann}]
    assert decode_id(first["id"], "Visit") is not None
    assert base64.b64decode(first["id"]).decode().startswith("gid://Jobber/Visit/")
    day = next(n for n in seen if n["id"] == all_day)
    local = datetime.fromisoformat(day["startAt"]).astimezone(ZoneInfo("America/Chicago"))
    assert day["allDay"] is True and local.date() == date(2030, 3, 5) and local.hour == 0

    fake.complete_visit(seeded[1])
    fake.delete_visit(seeded[2])
    assert gql(fake, token, VISIT, {"id": seeded[1]}).json()["data"]["visit"]["visitStatus"] == "COMPLETED"
    assert gql(fake, token, VISIT, {"id": seeded[2]}).json()["data"]["visit"] is None
    assert gql(fake, token, VISIT, {"id": unscheduled}).json()["data"]["visit"]["startAt"] is None
    assert fake.call_count("Visits") == 3 and fake.call_count("Visit") == 3


def test_cost_throttle_status_and_throttled_answer(fake: FakeJobber) -> None:
    account = fake.add_account()
    ann = fake.add_user(account, "Ann Smith")
    token = connect(fake, account)["access_token"]
    start = datetime(2030, 3, 4, 14, 0, tzinfo=UTC)
    fake.seed_visits(account, 5, [ann], start, 1)
    variables = {"first": 40, "from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()}
    body = gql(fake, token, VISITS, variables).json()
    cost = body["extensions"]["cost"]
    # 40 x (7 scalars + assignedUsers 100 x 1 + job{id} + client{id}) + pageInfo's 2
    assert cost["requestedQueryCost"] == 40 * 109 + 2
    assert cost["actualQueryCost"] == 5 * 10 + 2  # one per scalar returned
    status = cost["throttleStatus"]
    assert status["maximumAvailable"] == 10000 and status["restoreRate"] == 500
    assert 10000 - 52 <= status["currentlyAvailable"] <= 10000
    account_cost = gql(fake, token, ACCOUNT).json()["extensions"]["cost"]
    assert account_cost["requestedQueryCost"] == 2

    fake.set_bucket(account, restore_rate=1)
    fake.drain_bucket(account, to=100)
    throttled = gql(fake, token, VISITS, variables)
    assert throttled.status_code == 200
    answer = throttled.json()
    assert "data" not in answer
    assert answer["errors"] == [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
    assert answer["extensions"]["cost"]["requestedQueryCost"] == 40 * 109 + 2
    assert 100 <= answer["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] < 110
    assert gql(fake, token, ACCOUNT).json()["data"]["account"]["id"] == account  # a cheap query still runs
    assert fake.calls("Visits")[-1].throttled is True
    too_big = gql(fake, token, VISITS, {**variables, "first": 92}).json()  # 92 x 109 + 2 > 10000: never affordable
    assert too_big["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED" and "data" not in too_big


def test_request_count_limit_answers_429(fake: FakeJobber) -> None:
    account = fake.add_account()
    token = connect(fake, account)["access_token"]
    fake.set_request_limit(3, window=60)
    statuses = [gql(fake, token, ACCOUNT).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    other = connect(fake, fake.add_account())["access_token"]
    assert gql(fake, other, ACCOUNT).status_code == 200  # per account


def test_schema_rejects_a_query_it_does_not_have(fake: FakeJobber) -> None:
    token = connect(fake, fake.add_account())["access_token"]
    answer = gql(fake, token, "query Visits { visits(first: 5) { nodes { id startTime } } }").json()
    assert "Cannot query field 'startTime'" in answer["errors"][0]["message"] and "data" not in answer
    missing_variable = gql(fake, token, VISITS, {"first": 5}).json()
    assert "$from" in missing_variable["errors"][0]["message"]
    bad_time = gql(fake, token, VISITS, {"first": 5, "from": "tomorrow", "to": "2030-01-01T00:00:00Z"}).json()
    assert "ISO8601DateTime" in bad_time["errors"][0]["message"]


def test_users_clients_requests_and_user_errors(fake: FakeJobber) -> None:
    account = fake.add_account()
    ann = fake.add_user(account, "Ann Smith", "ann@example.com")
    fake.add_user(account, "Bob Jones")
    token = connect(fake, account)["access_token"]
    users = gql(fake, token, USERS, {"first": 1}).json()["data"]["users"]
    assert users["nodes"] == [{"id": ann, "name": {"full": "Ann Smith"}, "email": {"raw": "ann@example.com"}}]
    assert users["pageInfo"]["hasNextPage"] is True

    assert gql(fake, token, CLIENTS_BY_PHONE, {"term": "+15125550100"}).json()["data"]["clients"]["nodes"] == []
    created = gql(
        fake,
        token,
        CLIENT_CREATE,
        {
            "input": {
                "firstName": "Sam",
                "lastName": "Caller",
                "phones": [{"number": "+1 (512) 555-0100", "primary": True}],
            }
        },
    ).json()
    client_id = created["data"]["clientCreate"]["client"]["id"]
    found = gql(fake, token, CLIENTS_BY_PHONE, {"term": "+15125550100"}).json()["data"]["clients"]["nodes"]
    assert [c["id"] for c in found] == [client_id]

    start = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
    title = "Leaking tap [nmc:0123456789abcdef0123456789abcdef]"
    no_client = gql(fake, token, REQUEST_CREATE, {"input": {"title": title}}).json()["data"]["requestCreate"]
    assert no_client["request"] is None and no_client["userErrors"][0]["path"] == ["input", "clientId"]
    backwards = gql(
        fake,
        token,
        REQUEST_CREATE,
        {
            "input": {
                "clientId": client_id,
                "title": title,
                "assessment": {
                    "startAt": start.isoformat(),
                    "endAt": (start - timedelta(hours=1)).isoformat(),
                    "assignedUserIds": [ann],
                },
            }
        },
    )
    assert backwards.json()["data"]["requestCreate"]["userErrors"][0]["message"] == "End must be after start"
    made = gql(
        fake,
        token,
        REQUEST_CREATE,
        {
            "input": {
                "clientId": client_id,
                "title": title,
                "assessment": {
                    "startAt": start.isoformat(),
                    "endAt": (start + timedelta(hours=1)).isoformat(),
                    "assignedUserIds": [ann],
                },
            }
        },
    )
    request = made.json()["data"]["requestCreate"]["request"]
    assert request["assessment"]["startAt"] == "2030-03-04T15:00:00Z"
    by_term = gql(fake, token, REQUESTS_BY_TERM, {"term": "[nmc:0123456789abcdef0123456789abcdef]"}).json()
    assert [r["id"] for r in by_term["data"]["requests"]["nodes"]] == [request["id"]]

    note = gql(fake, token, REQUEST_NOTE, {"requestId": request["id"], "input": {"message": "Booked by text"}})
    assert note.json()["data"]["requestCreateNote"]["userErrors"] == []
    moved = gql(
        fake,
        token,
        EDIT_SCHEDULE,
        {
            "assessmentId": request["assessment"]["id"],
            "input": {"startAt": "2030-03-05T15:00:00Z", "endAt": "2030-03-05T16:00:00Z"},
        },
    ).json()
    assert moved["data"]["assessmentEditSchedule"]["assessment"]["startAt"] == "2030-03-05T15:00:00Z"
    unknown = gql(fake, token, EDIT_SCHEDULE, {"assessmentId": "bm9wZQ==", "input": {}}).json()
    assert unknown["data"]["assessmentEditSchedule"]["userErrors"][0]["message"] == "Assessment not found"
    first = gql(fake, token, ARCHIVE, {"requestId": request["id"]}).json()["data"]["requestArchive"]
    again = gql(fake, token, ARCHIVE, {"requestId": request["id"]}).json()["data"]["requestArchive"]
    assert first["userErrors"] == [] and "already archived" in again["userErrors"][0]["message"]

    [stored] = fake.requests(account)
    assert stored["title"] == title and stored["notes"] == ["Booked by text"] and stored["archived"] is True
    assert stored["assessment"]["assignedUserIds"] == [ann]
    assert stored["assessment"]["startAt"] == datetime(2030, 3, 5, 15, 0, tzinfo=UTC)
    assert [c["id"] for c in fake.clients(account)] == [client_id]
    assert fake.call_count("RequestArchive") == 2


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []
    failures = 0  # answer 503 to this many deliveries first

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body, self.headers["X-Jobber-Hmac-SHA256"]))
        failing = Receiver.failures > 0
        Receiver.failures -= 1
        self.send_response(503 if failing else 200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(fake: FakeJobber) -> Iterator[list[tuple[bytes, str]]]:
    Receiver.received = []
    Receiver.failures = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.webhook_url = f"http://127.0.0.1:{server.server_address[1]}/webhooks/jobber"
    yield Receiver.received
    fake.webhook_url = None
    server.shutdown()
    server.server_close()


def test_webhooks_are_signed_over_the_raw_body(fake: FakeJobber, receiver: list[tuple[bytes, str]]) -> None:
    account = fake.add_account()
    connect(fake, account)  # APP_CONNECT
    start = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
    visit = fake.add_visit(account, start=start, end=start + timedelta(hours=1))
    fake.update_visit(visit, start=start + timedelta(hours=2), end=start + timedelta(hours=3))
    series = fake.add_recurring_visits(account, 4, first_start=start)
    delivered = fake.wait_for_deliveries(4)
    assert [d.topic for d in delivered] == ["APP_CONNECT", "VISIT_CREATE", "VISIT_UPDATE", "VISIT_CREATE"]
    assert len(series) == 4 and delivered[3].item_id == series[0]  # only the first of the series notifies
    assert all(d.status == 200 and d.latency is not None and d.latency < 1 for d in delivered)
    for body, signature in receiver:
        expected = base64.b64encode(hmac.new(fake.client_secret.encode(), body, hashlib.sha256).digest()).decode()
        assert hmac.compare_digest(signature, expected)
    event = json.loads(receiver[1][0])["data"]["webHookEvent"]
    assert event["topic"] == "VISIT_CREATE" and event["accountId"] == account and event["itemId"] == visit
    assert event["appId"] == fake.client_id and "occurredAt" in event


def test_webhook_knobs_and_disconnect(fake: FakeJobber, receiver: list[tuple[bytes, str]]) -> None:
    fake.state.notify_connect = False
    account = fake.add_account()
    tokens = connect(fake, account)
    start = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
    fake.set_legacy_occured_at()
    fake.set_duplicate_deliveries()
    fake.hold_deliveries()
    visit = fake.add_visit(account, start=start, end=start + timedelta(hours=1))
    fake.complete_visit(visit)
    assert fake.wait_for_deliveries(1, timeout=0.2) == []  # held
    fake.release_deliveries(reverse=True)
    delivered = fake.wait_for_deliveries(4)
    assert [json.loads(b)["data"]["webHookEvent"]["topic"] for b, _ in receiver] == [
        "VISIT_COMPLETE",
        "VISIT_COMPLETE",
        "VISIT_CREATE",
        "VISIT_CREATE",
    ]
    assert "occuredAt" in json.loads(receiver[0][0])["data"]["webHookEvent"]
    assert len({d.body for d in delivered}) == 2

    fake.set_duplicate_deliveries(False)
    fake.disconnect_app(account)
    assert gql(fake, tokens["access_token"], ACCOUNT).status_code == 401  # dead before the webhook arrives
    assert refresh(fake, tokens["refresh_token"]).status_code == 401
    [disconnect] = fake.wait_for_deliveries(1, topic="APP_DISCONNECT")
    assert disconnect.item_id == account and disconnect.status == 200


def test_failure_injection(fake: FakeJobber) -> None:
    account = fake.add_account()
    tokens = connect(fake, account)
    fake.fail("Account", 500, times=2)
    assert [gql(fake, tokens["access_token"], ACCOUNT).status_code for _ in range(3)] == [500, 500, 200]
    fake.fail("token", 401)
    assert refresh(fake, tokens["refresh_token"]).status_code == 401
    assert refresh(fake, tokens["refresh_token"]).status_code == 200  # the injected failure did not use it
    fake.fail("graphql", delay=0.3)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake.api_url, json={"query": ACCOUNT}, timeout=0.1)


def test_a_failed_delivery_is_retried(fake: FakeJobber, receiver: list[tuple[bytes, str]]) -> None:
    fake.state.notify_connect = False
    account = fake.add_account()
    fake.set_webhook_retries(2, delay=0.05)
    Receiver.failures = 1
    start = datetime(2030, 3, 4, 15, 0, tzinfo=UTC)
    visit = fake.add_visit(account, start=start, end=start + timedelta(hours=1))
    first, second = fake.wait_for_deliveries(2)
    assert (first.status, first.attempt, second.status, second.attempt) == (503, 1, 200, 2)
    assert first.body == second.body and second.item_id == visit
    assert len(fake.wait_for_deliveries(3, timeout=0.3)) == 2  # no retry after a 200

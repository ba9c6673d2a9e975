"""Checks that the fake providers speak the real wire formats (real SDKs, real HTTP on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.fakes.clerk import FakeClerk
from tests.fakes.twilio_api import FakeTwilio

SID = "AC" + "ab" * 16
TOKEN = "secret-token"
SERVICE = "MG" + "cd" * 16
FROM = "+15005550006"
TO = "+15551230001"

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def twilio_server() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=SID, auth_token=TOKEN) as fake:
        yield fake


@pytest.fixture
def fake_twilio(twilio_server: FakeTwilio) -> FakeTwilio:
    twilio_server.reset()
    return twilio_server


@pytest.fixture
def sdk(fake_twilio: FakeTwilio) -> Client:
    client = Client(SID, TOKEN)
    client.api.base_url = fake_twilio.base_url  # Domain.absolute_url() reads base_url per request
    return client


@pytest.fixture
def api(fake_twilio: FakeTwilio) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_twilio.base_url, auth=(SID, TOKEN), trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def clerk() -> Iterator[FakeClerk]:
    with FakeClerk() as fake:
        yield fake


def messages_path(account_sid: str = SID) -> str:
    return f"/2010-04-01/Accounts/{account_sid}/Messages.json"


def send(api: httpx.Client, to: str = TO, **extra: str) -> httpx.Response:
    form = {"To": to, "From": FROM, "Body": "hello", **extra}
    return api.post(messages_path(), data=form)


def wait_for_status(fake: FakeTwilio, status: int, timeout: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (record := fake.messages()[0])["status"] != status:
        assert time.monotonic() < deadline, f"record never reached status {status}: {record}"
        time.sleep(0.05)
    return record


def verify(clerk: FakeClerk, token: str, **options: Any) -> dict[str, Any]:
    signing_key = jwt.PyJWKClient(clerk.jwks_url, cache_keys=False).get_signing_key_from_jwt(token)
    return jwt.decode(token, signing_key.key, algorithms=["RS256"], issuer=clerk.issuer, **options)


# --------------------------------------------------------------------------- Twilio via the real SDK


def test_sdk_create_fetch_and_list(sdk: Client, fake_twilio: FakeTwilio) -> None:
    sent = sdk.messages.create(to=TO, messaging_service_sid=SERVICE, from_=FROM, body="Missed your call!")

    assert sent.sid is not None
    assert sent.sid.startswith("SM")
    assert len(sent.sid) == 34
    assert (sent.account_sid, sent.messaging_service_sid, sent.from_, sent.to) == (SID, SERVICE, FROM, TO)
    assert (sent.status, sent.direction, sent.num_segments, sent.api_version) == (
        "accepted",
        "outbound-api",
        "1",
        "2010-04-01",
    )
    assert isinstance(sent.date_created, datetime)
    assert sent.date_sent is None
    assert sent.error_code is None
    assert sdk.messages(sent.sid).fetch().body == "Missed your call!"
    today = datetime.now(UTC).date()
    # Twilio leaves date_sent empty while a text is accepted or queued: a DateSent filter leaves it out.
    assert sdk.messages.list(to=TO, from_=FROM, date_sent_after=today) == []
    assert [m.sid for m in sdk.messages.list(to=TO, from_=FROM)] == [sent.sid]
    fake_twilio.set_status(sent.sid, "sent")
    assert [m.sid for m in sdk.messages.list(to=TO, from_=FROM, date_sent_after=today)] == [sent.sid]
    assert sdk.messages(sent.sid).fetch().date_sent is not None
    assert sdk.messages.list(to=TO, date_sent_after=today + timedelta(days=1)) == []
    record = fake_twilio.messages()[0]
    assert record["sid"] == sent.sid
    assert record["status"] == 201
    assert record["form"]["MessagingServiceSid"] == SERVICE
    assert record["received_at"] <= time.time()


def test_sdk_list_follows_next_page_uri(sdk: Client) -> None:
    sids = [sdk.messages.create(to=TO, from_=FROM, body=f"m{i}").sid for i in range(5)]

    listed = sdk.messages.list(to=TO, page_size=2)

    assert [m.sid for m in listed] == sids[::-1]  # newest first, like Twilio
    assert all(m.status == "queued" and m.messaging_service_sid is None for m in listed)


def test_sdk_surfaces_scripted_error_as_twilio_rest_exception(sdk: Client, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script([{"status": 400, "code": 21610}])

    with pytest.raises(TwilioRestException) as caught:
        sdk.messages.create(to=TO, from_=FROM, body="hi")

    assert (caught.value.status, caught.value.code) == (400, 21610)
    assert caught.value.msg == "Unable to create record: Attempt to send to unsubscribed recipient"


def test_sdk_only_messaging_service_gives_null_from(sdk: Client) -> None:
    sent = sdk.messages.create(to=TO, messaging_service_sid=SERVICE, body="x" * 161)

    assert (sent.from_, sent.status, sent.num_segments) == (None, "accepted", "2")


# --------------------------------------------------------------------------- Twilio via raw HTTP


@pytest.mark.parametrize(
    "auth",
    [None, (SID, "wrong-token"), ("AC" + "00" * 16, TOKEN)],
    ids=["no-auth", "bad-token", "bad-sid"],
)
def test_bad_basic_auth_is_401(fake_twilio: FakeTwilio, auth: tuple[str, str] | None) -> None:
    response = httpx.post(fake_twilio.base_url + messages_path(), data={"To": TO, "Body": "x"}, auth=auth)

    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert fake_twilio.messages()[0]["status"] == 401


def test_scripted_500_creates_nothing(api: httpx.Client, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script([{"status": 500}])

    failed, succeeded = send(api), send(api)

    assert failed.status_code == 500
    assert failed.json()["code"] == 20500
    assert failed.json()["status"] == 500
    assert succeeded.status_code == 201
    records = fake_twilio.messages()
    assert [(r["status"], r["sid"] is None) for r in records] == [(500, True), (201, False)]
    assert records[0]["script"] == {"status": 500}
    assert len(api.get(messages_path()).json()["messages"]) == 1


def test_scripted_21610_and_30006_bodies(api: httpx.Client, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script([{"status": 400, "code": 21610}, {"status": 400, "code": 30006}])

    bodies = [send(api).json(), send(api).json()]

    assert bodies[0] == {
        "code": 21610,
        "message": "Attempt to send to unsubscribed recipient",
        "more_info": "https://www.twilio.com/docs/errors/21610",
        "status": 400,
    }
    assert (bodies[1]["code"], bodies[1]["status"]) == (30006, 400)


def test_script_bound_to_a_number(api: httpx.Client, fake_twilio: FakeTwilio) -> None:
    other = "+15551239999"
    fake_twilio.script([{"status": 400, "code": 21610}], to=other)

    assert send(api, to=TO).status_code == 201
    assert send(api, to=other).status_code == 400
    assert send(api, to=other).status_code == 201


def test_delay_stores_message_before_answering(api: httpx.Client, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script([{"delay": 1.0}])
    started = time.time()

    with pytest.raises(httpx.ReadTimeout):
        api.post(messages_path(), data={"To": TO, "From": FROM, "Body": "slow"}, timeout=0.3)

    pending = fake_twilio.messages()[0]
    assert pending["status"] is None
    assert pending["sid"] is not None
    assert started <= pending["received_at"] < started + 1.0  # stamped on arrival, not after the delay
    assert api.get(messages_path(), params={"To": TO}).json()["messages"][0]["sid"] == pending["sid"]
    assert wait_for_status(fake_twilio, 201)["sid"] == pending["sid"]


def test_drop_after_create_answers_500_but_message_exists(api: httpx.Client, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script([{"drop_after_create": True}])

    response = send(api)

    assert response.status_code == 500
    assert response.json()["code"] == 20500
    sid = fake_twilio.messages()[0]["sid"]
    assert api.get(f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json").json()["status"] == "queued"


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": FROM, "Body": "x"}, 21604),
        ({"To": TO, "From": FROM}, 21602),
        ({"To": TO, "Body": "x"}, 21603),
    ],
)
def test_validation_errors(api: httpx.Client, form: dict[str, str], code: int) -> None:
    response = api.post(messages_path(), data=form)

    assert response.status_code == 400
    assert response.json()["code"] == code


def test_list_filters_with_literal_date_sent_param(api: httpx.Client, fake_twilio: FakeTwilio) -> None:
    mine, theirs = send(api).json(), send(api, to="+15550000000").json()
    queued = send(api).json()  # not sent yet: no date_sent, so no DateSent filter matches it
    for message in (mine, theirs):
        fake_twilio.set_status(message["sid"], "delivered")
    today = datetime.now(UTC).date().isoformat()

    page = api.get(f"{messages_path()}?To=%2B15551230001&DateSent%3E={today}&PageSize=20").json()

    assert [m["sid"] for m in page["messages"]] == [mine["sid"]] != [theirs["sid"]]
    assert queued["sid"] not in [m["sid"] for m in page["messages"]]
    assert (page["page"], page["page_size"], page["start"], page["next_page_uri"]) == (0, 20, 0, None)
    assert page["uri"].startswith(messages_path() + "?")
    assert "DateSent%3E=" in page["uri"]


def test_list_pages_newest_first_through_next_page_uri(api: httpx.Client) -> None:
    sids = [send(api, Body=f"m{i}").json()["sid"] for i in range(5)]

    seen, pages = [], 0
    page = api.get(messages_path(), params={"To": TO, "From": FROM, "PageSize": "2"}).json()
    while True:
        pages += 1
        seen += [m["sid"] for m in page["messages"]]
        if page["next_page_uri"] is None:
            break
        page = api.get(page["next_page_uri"]).json()

    assert seen == sids[::-1]
    assert pages == 3


def test_smart_encoding_stores_gsm_look_alikes(api: httpx.Client) -> None:
    body = "\u201cJoe\u2019s\u201d \u2013 back soon\u2026  "
    with_service = send(api, Body=body, MessagingServiceSid=SERVICE).json()
    opted_out = send(api, Body=body, MessagingServiceSid=SERVICE, SmartEncoded="false").json()
    plain = send(api, Body=body).json()

    expected = '"Joe\'s" - back soon...'
    assert with_service["body"] == expected
    assert api.get(f"/2010-04-01/Accounts/{SID}/Messages/{with_service['sid']}.json").json()["body"] == expected
    assert opted_out["body"] == plain["body"] == body


def test_scripted_429_carries_retry_after(api: httpx.Client, fake_twilio: FakeTwilio) -> None:
    fake_twilio.script([{"status": 429, "retry_after": 7}])

    response = send(api)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["code"] == 20429
    assert fake_twilio.messages()[0]["sid"] is None  # never processed


def test_fetch_unknown_message_is_404(api: httpx.Client) -> None:
    response = api.get(f"/2010-04-01/Accounts/{SID}/Messages/SM{'0' * 32}.json")

    assert response.status_code == 404
    assert response.json()["code"] == 20404


def test_resource_dates_are_rfc2822(api: httpx.Client) -> None:
    message = send(api).json()

    parsed = datetime.strptime(message["date_created"], "%a, %d %b %Y %H:%M:%S %z")
    assert abs(parsed - datetime.now(UTC)) < timedelta(seconds=5)
    assert message["date_updated"] == message["date_created"]
    assert message["uri"] == f"/2010-04-01/Accounts/{SID}/Messages/{message['sid']}.json"


def test_script_rejects_unknown_keys_and_reset_clears(fake_twilio: FakeTwilio, api: httpx.Client) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        fake_twilio.script([{"sttaus": 500}])
    fake_twilio.script([{"status": 500}])
    fake_twilio.reset()

    assert send(api).status_code == 201
    assert len(fake_twilio.messages()) == 1


# --------------------------------------------------------------------------- Clerk


def test_clerk_v2_token_verifies_via_jwks(clerk: FakeClerk) -> None:
    served_before = clerk.jwks_requests
    token = clerk.mint(sub="user_9", org_id="org_ABC", role="org:member")

    claims = verify(clerk, token)

    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": clerk.kid, "typ": "JWT"}
    assert claims["v"] == 2
    assert claims["o"] == {"id": "org_ABC", "rol": "member", "slg": "abc"}
    assert (claims["sub"], claims["iss"], claims["azp"]) == ("user_9", clerk.issuer, "https://app.nmc.test")
    assert claims["sid"].startswith("sess_")
    assert claims["exp"] - claims["iat"] == 60
    assert clerk.jwks_requests == served_before + 1


def test_clerk_v1_token_and_no_org(clerk: FakeClerk) -> None:
    v1 = verify(clerk, clerk.mint(org_id="org_1", version=1, org_slug="acme"))
    v2_no_org = verify(clerk, clerk.mint(azp=""))

    assert (v1["org_id"], v1["org_role"], v1["org_slug"]) == ("org_1", "org:admin", "acme")
    assert "v" not in v1
    assert "o" not in v1
    assert v2_no_org["v"] == 2
    assert "o" not in v2_no_org
    assert "azp" not in v2_no_org


def test_clerk_jwks_shape(clerk: FakeClerk) -> None:
    keys = httpx.get(clerk.jwks_url, trust_env=False).json()["keys"]

    assert [k["kid"] for k in keys] == clerk.published_kids
    assert all(set(k) == {"kty", "use", "kid", "alg", "n", "e"} for k in keys)
    assert (keys[0]["kty"], keys[0]["use"], keys[0]["alg"], keys[0]["e"]) == ("RSA", "sig", "RS256", "AQAB")


def test_clerk_rejections(clerk: FakeClerk) -> None:
    with pytest.raises(jwt.InvalidSignatureError):
        verify(clerk, clerk.mint(sign_with_foreign_key=True))
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(clerk, clerk.mint(exp_in=-5))
    with pytest.raises(jwt.ImmatureSignatureError):
        verify(clerk, clerk.mint(nbf_offset=30))
    with pytest.raises(jwt.InvalidIssuerError):
        verify(clerk, clerk.mint(iss="https://evil.test"))


def test_clerk_rotation() -> None:
    with FakeClerk(issuer="https://rotating.test") as clerk:
        first_kid = clerk.kid
        old_token = clerk.mint()
        second_kid = clerk.rotate(keep_old=True)

        assert clerk.published_kids == [first_kid, second_kid]
        assert verify(clerk, old_token)["sub"] == "user_123"
        assert jwt.get_unverified_header(clerk.mint())["kid"] == second_kid

        third_kid = clerk.rotate(keep_old=False)
        assert clerk.published_kids == [third_kid]
        with pytest.raises(jwt.PyJWKClientError):
            verify(clerk, old_token)
        with pytest.raises(jwt.PyJWKClientError):
            verify(clerk, clerk.mint(kid=second_kid))
        assert verify(clerk, clerk.mint())["sub"] == "user_123"

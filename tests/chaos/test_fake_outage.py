"""The fake Twilio's outage hook, which the fault suite drives: every Messages request fails (or
hangs, or is slow) until healed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TWILIO_SID, TWILIO_TOKEN
from tests.fakes.twilio_api import FakeTwilio


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(account_sid=TWILIO_SID, auth_token=TWILIO_TOKEN) as server:
        yield server


def create(fake: FakeTwilio, to: str, timeout: float = 5) -> httpx.Response:
    form = {"To": to, "From": "+15550001111", "Body": "hi", "MessagingServiceSid": "MG" + "1" * 32}
    return httpx.post(fake.messages_url, data=form, auth=(TWILIO_SID, TWILIO_TOKEN), timeout=timeout)


def listing(fake: FakeTwilio, to: str) -> httpx.Response:
    return httpx.get(fake.messages_url, params={"To": to}, auth=(TWILIO_SID, TWILIO_TOKEN), timeout=5)


def test_outage_refuses_every_messages_request_until_healed(fake: FakeTwilio) -> None:
    fake.reset()
    fake.outage(status=429, retry_after=2)
    refused = create(fake, "+15550000001")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"
    assert refused.json()["code"] == 20429
    assert listing(fake, "+15550000001").status_code == 429
    fake.heal()
    assert create(fake, "+15550000001").status_code == 201
    records = fake.messages()
    assert [r["status"] for r in records] == [429, 201]
    assert [bool(r["sid"]) for r in records] == [False, True]


def test_outage_with_drop_after_create_creates_the_text(fake: FakeTwilio) -> None:
    fake.reset()
    fake.outage(status=500, drop_after_create=True)
    assert create(fake, "+15550000002").status_code == 500
    fake.heal()
    found = listing(fake, "+15550000002").json()["messages"]
    assert len(found) == 1


def test_outage_hang_outlasts_the_client(fake: FakeTwilio) -> None:
    fake.reset()
    fake.outage(status=504, delay=30)
    with pytest.raises(httpx.TimeoutException):
        create(fake, "+15550000003", timeout=0.5)
    fake.heal()
    assert create(fake, "+15550000003").status_code == 201


def test_outage_without_status_is_latency(fake: FakeTwilio) -> None:
    fake.reset()
    fake.outage(delay=0.3)
    started = time.monotonic()
    assert create(fake, "+15550000004").status_code == 201
    assert time.monotonic() - started >= 0.3
    fake.reset()  # heals as well
    started = time.monotonic()
    assert create(fake, "+15550000004").status_code == 201
    assert time.monotonic() - started < 0.3


def test_bad_outage_is_refused(fake: FakeTwilio) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        fake.outage(status=200)
    with pytest.raises(httpx.HTTPStatusError):
        fake.outage(colour="red")


def test_latency_drops_a_request_whose_client_left(fake: FakeTwilio) -> None:
    fake.reset()
    fake.outage(delay=1.0, drop_if_client_leaves=True)
    with pytest.raises(httpx.TimeoutException):
        create(fake, "+15550000005", timeout=0.3)  # the client gives up (a worker killed) mid-delay
    assert create(fake, "+15550000006").status_code == 201  # a client that waits gets its text
    fake.heal()
    time.sleep(1.0)
    created = {r["form"]["To"] for r in fake.messages() if r["sid"]}
    assert created == {"+15550000006"}

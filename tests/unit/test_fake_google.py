"""The fake Google speaks the wire format the calendars module relies on (providers.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fakes.google import FakeGoogle


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture
def api(google: FakeGoogle) -> Iterator[httpx.Client]:
    google.reset()
    token = httpx.post(
        f"{google.base_url}/token", data={"grant_type": "authorization_code", "code": google.issue_code()}
    ).json()
    assert token["refresh_token"].startswith("1//") and token["expires_in"] == 3600
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    with httpx.Client(base_url=f"{google.base_url}/calendar/v3", headers=headers, timeout=5) as client:
        client.refresh_token = token["refresh_token"]  # type: ignore[attr-defined]
        yield client


def reason(response: httpx.Response) -> Any:
    return response.json()["error"]["errors"][0]["reason"]


def test_oauth_refresh_revoke_and_invalid_grant(google: FakeGoogle, api: httpx.Client) -> None:
    refresh = api.refresh_token  # type: ignore[attr-defined]
    renewed = httpx.post(f"{google.base_url}/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert renewed.status_code == 200 and "refresh_token" not in renewed.json()
    assert httpx.post(f"{google.base_url}/revoke", data={"token": refresh}).status_code == 200
    dead = httpx.post(f"{google.base_url}/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    assert api.get("/calendars/primary/events").status_code == 401  # its access tokens die with it


def test_events_list_pages_sync_tokens_and_410(google: FakeGoogle, api: httpx.Client) -> None:
    start = datetime.now(UTC) + timedelta(days=1)
    ids = [google.add_event(start=start + timedelta(hours=i), end=start + timedelta(hours=i + 1)) for i in range(5)]
    google.state.page_size = 2
    pages, token, page_token = [], None, None
    while True:
        params = {
            "singleEvents": "true",
            "timeMin": start.isoformat(),
            **({"pageToken": page_token} if page_token else {}),
        }
        body = api.get("/calendars/primary/events", params=params).json()
        pages.append(body)
        page_token = body.get("nextPageToken")
        if not page_token:
            token = body["nextSyncToken"]
            break
    assert [e["id"] for p in pages for e in p["items"]] == ids and all("nextSyncToken" not in p for p in pages[:-1])
    google.cancel_event("primary", ids[0])
    changed = api.get("/calendars/primary/events", params={"syncToken": token}).json()
    assert changed["items"] == [{"kind": "calendar#event", "id": ids[0], "status": "cancelled",
                                 "updated": changed["items"][0]["updated"]}]  # fmt: skip
    refused = api.get("/calendars/primary/events", params={"syncToken": token, "timeMin": start.isoformat()})
    assert refused.status_code == 400
    google.invalidate_sync_tokens()
    gone = api.get("/calendars/primary/events", params={"syncToken": token})
    assert gone.status_code == 410 and reason(gone) == "fullSyncRequired"


def test_insert_patch_delete_with_client_ids(api: httpx.Client) -> None:
    start = datetime.now(UTC) + timedelta(days=2)
    body = {"id": "nmc0123456789abcdef", "summary": "Repair", "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(hours=1)).isoformat()}}  # fmt: skip
    assert api.post("/calendars/primary/events", json=body).status_code == 200
    duplicate = api.post("/calendars/primary/events", json=body)
    assert duplicate.status_code == 409 and reason(duplicate) == "duplicate"
    patched = api.patch("/calendars/primary/events/nmc0123456789abcdef", json={"summary": "Moved"})
    assert patched.json()["summary"] == "Moved"
    assert api.delete("/calendars/primary/events/nmc0123456789abcdef").status_code == 204
    assert api.delete("/calendars/primary/events/nmc0123456789abcdef").status_code == 410
    assert api.delete("/calendars/primary/events/unknown").status_code == 404
    assert api.post("/calendars/primary/events", json=body).status_code == 409  # deleted ids stay taken


def test_watch_stop_freebusy_and_failure_injection(google: FakeGoogle, api: httpx.Client) -> None:
    watch = {
        "id": "chan1",
        "type": "web_hook",
        "address": "http://127.0.0.1:9/hook",
        "token": "t",
        "params": {"ttl": "60"},
    }
    opened = api.post("/calendars/primary/events/watch", json=watch).json()
    assert int(opened["expiration"]) / 1000 <= datetime.now(UTC).timestamp() + 61 and opened["resourceId"]
    assert api.post("/channels/stop", json={"id": "chan1", "resourceId": "other"}).status_code == 404
    assert api.post("/channels/stop", json={"id": "chan1", "resourceId": opened["resourceId"]}).status_code == 204
    start = datetime.now(UTC) + timedelta(days=1)
    google.add_event(start=start, end=start + timedelta(hours=1))
    google.add_event(start=start + timedelta(minutes=30), end=start + timedelta(hours=2))
    google.add_event(start=start, end=start + timedelta(hours=3), transparency="transparent")
    query = {
        "timeMin": start.isoformat(),
        "timeMax": (start + timedelta(hours=4)).isoformat(),
        "items": [{"id": "primary"}],
    }
    busy = api.post("/freeBusy", json=query).json()["calendars"]["primary"]["busy"]
    assert len(busy) == 1 and datetime.fromisoformat(busy[0]["end"].replace("Z", "+00:00")) == start + timedelta(
        hours=2
    )
    google.fail("freebusy", 403, reason="rateLimitExceeded")
    google.fail("freebusy", 500)
    assert reason(api.post("/freeBusy", json=query)) == "rateLimitExceeded"
    assert api.post("/freeBusy", json=query).status_code == 500
    google.fail("events.list", delay=1.0)
    with pytest.raises(httpx.TimeoutException):
        api.get("/calendars/primary/events", timeout=0.2)

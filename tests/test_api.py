"""The HTTP API over real HTTP on loopback, served by the local host from function_app."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.cli.azurite import free_port
from shared.cli.local_http import LocalHttpServer
from shared.core.contracts import RecordRef
from shared.pipeline.audit import record_trail
from shared.pipeline.context import AppContext
from shared.pipeline.poll import poll_all
from shared.store.stores import AUDIT

from .helpers import local_host

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            return exc.code, json.loads(payload) if payload.startswith(b"{") else payload


@pytest.fixture
def api(context: AppContext) -> Iterator[Api]:
    poll_all(context, NOW)
    host = local_host(context.stores.queues)
    host.drain()
    server = LocalHttpServer(("127.0.0.1", free_port()), host, route_prefix="api")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Api(f"http://127.0.0.1:{server.server_address[1]}/api")
    server.shutdown()
    server.server_close()


def test_list_search_and_page_records(api: Api) -> None:
    status, page = api.call("GET", "/records?type=case&limit=50")
    assert status == 200
    assert sorted(r["id"] for r in page["records"]) == ["CASE-1", "CASE-2", "CASE-3", "CASE-4"]
    assert page["continuation"] is None
    _, found = api.call("GET", "/records?q=invoice")
    assert [r["title"] for r in found["records"]] == ["Invoice 2291 charges us twice"]
    _, by_contact = api.call("GET", "/records?contact=bob@fabrikam.example")
    assert [r["fields"] for r in by_contact["records"]] == [{"ProblemType": "Billing"}]
    first, seen = api.call("GET", "/records?limit=3")[1], []
    seen += [r["id"] for r in first["records"]]
    assert len(seen) == 3 and first["continuation"]
    second = api.call("GET", f"/records?limit=3&continuation={first['continuation']}")[1]
    seen += [r["id"] for r in second["records"]]
    assert sorted(seen) == ["CASE-1", "CASE-2", "CASE-3", "CASE-4"]


def id_of(api: Api, title: str) -> str:
    """Numbers follow the order the stages happened to run in: look records up by title."""
    records = api.call("GET", "/records?limit=50")[1]["records"]
    return str(next(r["id"] for r in records if r["title"] == title))


def test_get_record_with_timeline_and_audit(api: Api, context: AppContext) -> None:
    printer = id_of(api, "Printer on floor 3 is jammed")
    status, record = api.call("GET", f"/records/case/{printer}")
    assert status == 200
    assert record["title"] == "Printer on floor 3 is jammed"
    assert [e["subject"] for e in record["timeline"]] == [
        "Printer on floor 3 is jammed",
        "Re: Printer on floor 3 is jammed",
        "Re: Re: Printer on floor 3 is jammed",
    ]
    number = printer.removeprefix("CASE-")
    assert api.call("GET", f"/records/case/{number}")[1]["key"] == record["key"]
    assert api.call("GET", f"/records/case/{record['key']}")[1]["id"] == printer
    trail = list(record_trail(context.stores, RecordRef(type="case", key=record["key"])))
    actions = [a["Action"] for a in trail]
    assert actions.count("create") == 1 and actions.count("read") == 3
    # mark_read after filing (sample config), once per filed mail of the record
    assert actions.count("mailbox_action") == 3
    day = list(context.stores.table(AUDIT).partition(f"day-{datetime.now(UTC):%Y%m%d}"))
    assert len(day) >= len(trail)


def test_update_fields_and_status_with_clear_errors(api: Api) -> None:
    status, updated = api.call("PATCH", "/records/case/CASE-2", {"status": "closed"})
    assert (status, updated["status"]) == (200, "closed")
    assert api.call("PATCH", "/records/case/CASE-2", {"status": "gone"})[0] == 422
    assert api.call("PATCH", "/records/case/CASE-2", {"fields": {"Nope": 1}})[0] == 422
    assert api.call("PATCH", "/records/case/CASE-2", {"colour": "red"})[0] == 400
    assert api.call("PATCH", "/records/case/CASE-2", raw=b"{not json")[0] == 400
    assert api.call("PATCH", "/records/case/CASE-2", raw=b"x" * 70_000)[0] == 413
    code, error = api.call("GET", "/records/case/CASE-99")
    assert code == 404 and error["error"]["code"] == "not_found"
    code, error = api.call("GET", "/records/nope/1")
    assert code == 404 and "no record type 'nope'" in error["error"]["message"]
    assert api.call("GET", "/records?limit=0")[0] == 400
    assert api.call("GET", "/records?continuation=%%%")[0] == 400


def test_message_status_and_manual_filing_moves_the_conversation(
    api: Api, context: AppContext
) -> None:
    access = id_of(api, "Zugang gesperrt – bitte helfen")
    printer = id_of(api, "Printer on floor 3 is jammed")
    code, msg = api.call("GET", "/messages/<a1b2c3@mx.example.de>")
    assert code == 200 and msg["status"] == "filed" and msg["filed"]["display_id"] == access
    assert len(msg["sightings"]) == 1
    assert api.call("GET", "/messages/ffff")[0] == 404
    # File the access-locked mail onto the printer record by hand: its replies follow it there.
    code, filed = api.call(
        "POST", f"/records/case/{printer}/messages", {"message_id": "a1b2c3@mx.example.de"}
    )
    assert code == 202 and filed["status"] == "queued"
    local_host(context.stores.queues).drain()
    assert api.call("GET", "/messages/a1b2c3@mx.example.de")[1]["filed"]["display_id"] == printer
    assert api.call("POST", "/records/case/CASE-1/messages", {"message_id": "none@x"})[0] == 404
    assert api.call("POST", "/records/case/CASE-1/messages", {"foo": 1})[0] == 400


def test_openapi_document(api: Api) -> None:
    code, doc = api.call("GET", "/openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/records",
        "/records/{type}/{id}",
        "/records/{type}/{id}/messages",
        "/records/{type}/{id}/reply",
        "/messages/{key}",
    }
    assert "RecordWithTimeline" in doc["components"]["schemas"]

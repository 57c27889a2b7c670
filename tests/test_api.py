"""The HTTP API over real HTTP on loopback, served by the local host from function_app."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.core.config import parse_config
from shared.core.contracts import RecordRef
from shared.services.audit import day_trail, record_trail
from shared.services.context import AppContext, set_context
from shared.stages.polls import poll_all
from shared.store.stores import EVENTS

from .conftest import SAMPLES
from .helpers import local_host
from .serving import serve_api

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        status, _, payload = self.request(method, path, body, raw)
        return status, payload

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """Status, headers (names lowercased) and the JSON (or raw bytes) answered."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                got = {k.lower(): v for k, v in response.headers.items()}
                return response.status, got, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            got = {k.lower(): v for k, v in exc.headers.items()}
            return exc.code, got, json.loads(payload) if payload.startswith(b"{") else payload


@contextmanager
def serving(context: AppContext) -> Iterator[Api]:
    poll_all(context, NOW)
    host = local_host(context.stores.queues)
    host.drain()
    with serve_api(host) as served:
        yield Api(served.base)


@pytest.fixture
def api(context: AppContext) -> Iterator[Api]:
    with serving(context) as api:
        yield api


# The sample configuration with fields of each kind on `case`, and events switched on.
FIELDS_YAML = """    fields:
      - {name: Priority, type: int}
      - {name: Notes, type: text}
      - {name: ProblemType, type: text}
"""


@pytest.fixture
def fields_context(context: AppContext) -> Iterator[AppContext]:
    text = (SAMPLES / "mailfiler.yaml").read_text()
    text = text.replace("    title: Support case\n", "    title: Support case\n" + FIELDS_YAML)
    text = text.replace("path: mail", f"path: {context.base_dir / 'mail'}")
    ctx = dataclasses.replace(context, config=parse_config(text + "events: {queue: api-events}\n"))
    set_context(ctx)
    yield ctx
    set_context(context)


@pytest.fixture
def fields_api(fields_context: AppContext) -> Iterator[Api]:
    with serving(fields_context) as api:
        yield api


def is_error(payload: Any, code: str | None = None) -> bool:
    """The documented error body: {"error": {"code": str, "message": str}}, nothing else."""
    if not isinstance(payload, dict) or set(payload) != {"error"}:
        return False
    error = payload["error"]
    return (
        isinstance(error, dict)
        and set(error) == {"code", "message"}
        and isinstance(error["message"], str)
        and bool(error["message"])
        and (error["code"] == code if code else isinstance(error["code"], str))
    )


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
    # Newest first (by creation, then number), across pages as within one.
    newest = sorted(page["records"], key=lambda r: (r["created_at"], r["number"]), reverse=True)
    assert seen == [r["id"] for r in newest]
    assert [r["id"] for r in page["records"]] == seen


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
    # The day's trail: table Audit's day, and the creations kept beside the records.
    types = [t.name for t in context.config.record_types]
    day = list(day_trail(context.stores, datetime.now(UTC), types))
    assert len(day) >= len(trail)
    assert [a["RowKey"] for a in day if a["RecordKey"] == record["key"]] == sorted(
        str(a["RowKey"]).removeprefix("~audit-") for a in trail
    )


def test_update_fields_and_status_with_clear_errors(api: Api) -> None:
    status, updated = api.call("PATCH", "/records/case/CASE-2", {"status": "closed"})
    assert (status, updated["status"]) == (200, "closed")
    assert api.call("PATCH", "/records/case/CASE-2", {"status": "gone"})[0] == 422
    # An unknown key is named, with the key meant.
    code, error = api.call("PATCH", "/records/case/CASE-2", {"state": "closed"})
    assert code == 400 and is_error(error, "bad_body"), error
    assert error["error"]["message"].startswith("unknown key 'state' (did you mean 'status'?)")
    # A list filtered by a status no record can have is a mistake named, not an empty page.
    code, error = api.call("GET", "/records?status=bogus")
    assert code == 422 and is_error(error, "bad_status"), error
    assert "'bogus'" in error["error"]["message"] and "closed" in error["error"]["message"]
    assert api.call("GET", "/records?type=case&status=%D0%BD%D0%BE%D0%B2%D1%8B%D0%B9")[0] == 422
    code, page = api.call("GET", "/records?status=new")
    assert code == 200 and page["records"], page
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
        "/messages",
        "/messages/{key}",
        "/records/{type}/{id}/messages/{key}/attachments/{index}",
        "/messages/{key}/raw",
        "/health",
    }
    assert "RecordWithTimeline" in doc["components"]["schemas"]
    code, health = api.call("GET", "/health")
    assert code == 200 and health["status"] in {"ok", "degraded"}, health


def test_inputs_that_once_answered_500_get_a_documented_4xx(api: Api) -> None:
    cases: list[tuple[str, str, bytes | None, int, str]] = [
        # "²" and "٣" pass str.isdigit(); int() refuses the first and reads the second as 3.
        ("GET", "/records/case/%C2%B2", None, 404, "not_found"),
        ("GET", "/records/case/CASE-%D9%A3", None, 404, "not_found"),
        ("GET", "/records/case/" + "9" * 5000, None, 404, "not_found"),
        # base64 of "abc", [1,2] and 12: JSON, but not a token we handed out
        ("GET", "/records?continuation=ImFiYyI=", None, 400, "bad_continuation"),
        ("GET", "/records?continuation=WzEsMl0=", None, 400, "bad_continuation"),
        ("GET", "/records?continuation=MTI=", None, 400, "bad_continuation"),
        ("GET", "/records?continuation=" + "W" * 4100, None, 400, "bad_continuation"),
        ("GET", "/messages/" + "ab" * 600, None, 404, "unknown_message"),
        ("GET", "/messages/" + "%D0%B6" * 600, None, 404, "unknown_message"),
        ("PATCH", "/records/case/CASE-1", b"[" * 30_000, 400, "bad_json"),
        ("PATCH", "/records/case/CASE-1", b'{"status": NaN}', 400, "bad_json"),
        ("POST", "/records/case/CASE-1/messages", b"{" * 30_000, 400, "bad_json"),
        ("POST", "/records/case/CASE-1/messages", b'{"message_id": ""}', 400, "bad_body"),
        ("POST", "/records/case/CASE-1/messages", b'{"message_id": 7}', 400, "bad_body"),
        ("PATCH", "/records/case/CASE-1", b'{"fields": false}', 400, "bad_body"),
    ]
    for method, path, raw, status, code in cases:
        got, headers, payload = api.request(method, path, raw=raw)
        assert (got, is_error(payload, code)) == (status, True), (path[:60], got, payload)
        assert headers["content-type"] == "application/json"


def test_field_values_are_checked_against_what_table_storage_holds(fields_api: Api) -> None:
    # One past Int64 either way: refused with the reason, and the record keeps its value.
    for value in (2**63, -(2**63) - 1, 10**30):
        code, error = fields_api.call(
            "PATCH", "/records/case/CASE-1", {"fields": {"Priority": value}}
        )
        assert (code, is_error(error, "bad_field")) == (422, True)
        assert "Priority" in error["error"]["message"]
    code, record = fields_api.call(
        "PATCH", "/records/case/CASE-1", {"fields": {"Priority": -(2**63)}}
    )
    assert (code, record["fields"]["Priority"]) == (200, -(2**63))
    code, record = fields_api.call(
        "PATCH", "/records/case/CASE-1", {"fields": {"Priority": 2**63 - 1}}
    )
    assert (code, record["fields"]["Priority"]) == (200, 2**63 - 1)
    # 40,000 ASCII characters fit the 64 KiB body but not a 64 KiB (UTF-16) property.
    code, error = fields_api.call(
        "PATCH", "/records/case/CASE-1", {"fields": {"Notes": "a" * 40_000}}
    )
    assert (code, is_error(error, "bad_field")) == (422, True)
    notes = "Клиент ждёт ответа; 顧客は返事を待っています; العميل ينتظر"
    code, record = fields_api.call("PATCH", "/records/case/CASE-1", {"fields": {"Notes": notes}})
    assert (code, record["fields"]["Notes"]) == (200, notes)
    assert fields_api.call("GET", "/records/case/CASE-1")[1]["fields"]["Notes"] == notes


def test_get_answers_a_strong_etag_and_patch_honours_if_match(fields_api: Api) -> None:
    path = "/records/case/CASE-2"
    code, headers, record = fields_api.request("GET", path)
    first = headers["etag"]
    assert code == 200 and first.startswith('"') and first.endswith('"') and len(first) > 10
    # Reads write audit rows, not the record: the ETag holds.
    assert fields_api.request("GET", path)[1]["etag"] == first
    other = fields_api.request("GET", "/records/case/CASE-3")[1]["etag"]
    assert other != first

    for stale in ('"nope"', f"W/{first}", other):
        code, error = fields_api.request(
            "PATCH", path, {"status": "pending"}, headers={"If-Match": stale}
        )[::2]
        assert (code, is_error(error, "precondition_failed")) == (412, True)
    assert fields_api.request("GET", path)[2]["status"] == record["status"]

    code, headers, updated = fields_api.request(
        "PATCH", path, {"status": "pending"}, headers={"If-Match": f'"x", {first}'}
    )
    assert (code, updated["status"]) == (200, "pending")
    second = headers["etag"]
    assert second != first
    assert fields_api.request("GET", path)[1]["etag"] == second  # what a GET now answers
    # The first ETag is stale now: a client that read before the change cannot overwrite it.
    code, error = fields_api.request(
        "PATCH", path, {"status": "open"}, headers={"If-Match": first}
    )[::2]
    assert (code, is_error(error, "precondition_failed")) == (412, True)
    code, headers, updated = fields_api.request(
        "PATCH", path, {"fields": {"Notes": "αβγ"}}, headers={"If-Match": "*"}
    )
    assert (code, updated["fields"]["Notes"], updated["status"]) == (200, "αβγ", "pending")
    assert headers["etag"] not in (first, second)
    # If-Match is optional.
    assert fields_api.call("PATCH", path, {"status": "open"})[0] == 200


def test_of_two_clients_holding_the_same_etag_exactly_one_writes(fields_api: Api) -> None:
    path = "/records/case/CASE-3"
    for notes in (("один", "два"), ("三", "四"), ("five", "six"), ("ε", "ζ")):
        tag = fields_api.request("GET", path)[1]["etag"]

        def patch(text: str, tag: str = tag) -> int:
            body = {"fields": {"Notes": text}}
            return fields_api.request("PATCH", path, body, headers={"If-Match": tag})[0]

        with ThreadPoolExecutor(2) as pool:
            statuses = list(pool.map(patch, notes))
        assert sorted(statuses) == [200, 412]
        kept = fields_api.call("GET", path)[1]["fields"]["Notes"]
        assert kept == notes[statuses.index(200)]


def test_a_patch_that_changes_nothing_writes_nothing(
    fields_api: Api, fields_context: AppContext
) -> None:
    stores = fields_context.stores
    path = "/records/case/CASE-4"
    code, headers, record = fields_api.request("GET", path)
    ref = RecordRef(type="case", key=record["key"])

    def updates() -> int:
        return sum(1 for row in record_trail(stores, ref) if row["Action"] == "update")

    events = stores.queues.depth(EVENTS) or 0  # what filing the sample mail left there
    nothing: tuple[dict[str, Any], ...] = (
        {"status": record["status"]},
        {"fields": {"Priority": None}},
        {"fields": None},
        {"status": None, "fields": {}},
    )
    for body in nothing:
        code, again, same = fields_api.request("PATCH", path, body)
        assert (code, again["etag"], same["updated_at"]) == (
            200,
            headers["etag"],
            record["updated_at"],
        )
    assert updates() == 0 and stores.queues.depth(EVENTS) == events

    code, changed = fields_api.call("PATCH", path, {"status": "pending", "fields": {"Priority": 3}})
    assert code == 200 and changed["updated_at"] != record["updated_at"]
    assert updates() == 1 and stores.queues.depth(EVENTS) == events + 1
    # The same again changes nothing more.
    assert (
        fields_api.call("PATCH", path, {"status": "pending", "fields": {"Priority": 3}})[0] == 200
    )
    assert updates() == 1 and stores.queues.depth(EVENTS) == events + 1


def test_json_bodies_only_as_application_json(fields_api: Api) -> None:
    path = "/records/case/CASE-1"
    before = fields_api.call("GET", path)[1]["status"]
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        code, error = fields_api.request(
            "PATCH", path, {"status": "closed"}, headers={"Content-Type": media}
        )[::2]
        assert (code, is_error(error, "unsupported_media_type")) == (415, True)
        code, error = fields_api.request(
            "POST", f"{path}/reply", {"body": "Привет"}, headers={"Content-Type": media}
        )[::2]
        assert (code, is_error(error, "unsupported_media_type")) == (415, True)
    assert fields_api.call("GET", path)[1]["status"] == before
    code, updated = fields_api.request(
        "PATCH",
        path,
        {"status": "closed"},
        headers={"Content-Type": "application/json; charset=utf-8"},
    )[::2]
    assert (code, updated["status"]) == (200, "closed")


def test_the_audit_actor_trusts_the_principal_header_only_behind_app_service_auth(
    api: Api, context: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    monkeypatch.delenv("WEBSITE_INSTANCE_ID", raising=False)
    record = api.call("GET", "/records/case/CASE-1")[1]
    ref = RecordRef(type="case", key=record["key"])

    def last_actor(headers: dict[str, str]) -> str:
        assert api.request("GET", "/records/case/CASE-1", headers=headers)[0] == 200
        reads = [row for row in record_trail(context.stores, ref) if row["Action"] == "read"]
        return str(max(reads, key=lambda row: row["At"])["Actor"])

    forged = {"x-ms-client-principal-name": "ceo@contoso.example"}
    assert last_actor(forged) == "anonymous"  # the local host checks no key
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "False")
    assert last_actor(forged) == "anonymous"
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "a1b2c3")  # in Azure: the host checked the key
    assert last_actor({**forged, "x-functions-key": "k"}) == "function-key"
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert last_actor(forged) == "ceo@contoso.example"
    assert last_actor({"x-functions-key": "k"}) == "function-key"

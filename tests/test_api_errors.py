"""JSON errors for unknown routes (404) and methods (405 with Allow), and reason phrases in
the status line, over real HTTP on loopback (issue 21 point 7)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import azure.functions as func
import pytest

from shared.functions.api import allowed_methods, not_found
from shared.services.context import AppContext

from .helpers import local_host
from .serving import Served, serve_api

pytestmark = pytest.mark.azurite


@pytest.fixture
def served(context: AppContext) -> Iterator[Served]:
    with serve_api(local_host(context.stores.queues)) as served:
        yield served


def ask(
    served: Served, method: str, path: str
) -> tuple[int, str, dict[str, str], dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.request(method, path, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, response.reason, headers, json.loads(body) if body else {}
    finally:
        conn.close()


def test_an_unknown_route_is_a_json_404_with_its_reason_phrase(served: Served) -> None:
    status, reason, headers, body = ask(served, "GET", "/api/recordz")
    assert (status, reason) == (404, "Not Found")
    assert headers["content-type"].startswith("application/json")
    assert body == {"error": {"code": "not_found", "message": "no route '/api/recordz'"}}
    # Outside /api too, and in another script.
    status, _, _, body = ask(served, "GET", "/%D0%B7%D0%B0%D0%BF%D0%B8%D1%81%D0%B8")
    assert status == 404 and body["error"]["code"] == "not_found"  # type: ignore[index]


def test_a_known_route_with_another_method_is_a_405_naming_the_allowed_ones(
    served: Served,
) -> None:
    status, reason, headers, body = ask(served, "DELETE", "/api/records/case/12")
    assert (status, reason) == (405, "Method Not Allowed")
    assert headers["allow"] == "GET, PATCH"
    assert body == {
        "error": {
            "code": "method_not_allowed",
            "message": "DELETE is not allowed here: GET, PATCH",
        }
    }
    status, _, headers, _ = ask(served, "PUT", "/api/records")
    assert (status, headers["allow"]) == (405, "GET")


def test_an_answer_carries_its_reason_phrase(served: Served) -> None:
    status, reason, _, _ = ask(served, "GET", "/api/openapi.json")
    assert (status, reason) == (200, "OK")


def test_the_catch_all_answers_as_the_local_host_does_in_azure() -> None:
    """In Azure the Functions host routes; the catch-all function gives the same answers."""
    assert allowed_methods("/records/case/12") == ["GET", "PATCH"]
    assert allowed_methods("/records/case/12/reply") == ["POST"]
    assert allowed_methods("/nowhere") == []
    request = func.HttpRequest(
        "DELETE", "http://x/api/records/case/12", route_params={"path": "records/case/12"}, body=b""
    )
    response = not_found(request)
    assert response.status_code == 405 and response.headers["Allow"] == "GET, PATCH"
    request = func.HttpRequest("GET", "http://x/api/дела", route_params={"path": "дела"}, body=b"")
    response = not_found(request)
    assert response.status_code == 404
    assert json.loads(response.get_body()) == {
        "error": {"code": "not_found", "message": "no route '/api/дела'"}
    }

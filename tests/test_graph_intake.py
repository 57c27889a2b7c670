"""The webhook's persisted form: blobs of checked notifications, packed into queue messages
that stay under the 64 KiB limit, read back in order (and the earlier `Z1` form still read)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import zlib

import pytest

from shared.functions.graph import HTTP_STATUS
from shared.sources.graph.clientstate import make, new_nonce
from shared.stages.graph_notifications import (
    FORMAT,
    MAX_BLOB,
    MAX_BODY,
    MAX_MESSAGE,
    Answer,
    blobs,
    check,
    framed,
    pack,
    persist,
    unpack,
)
from shared.store.errors import ContractError
from shared.store.queues import MAX_MESSAGE_BYTES

SECRET = b"client-state-secret"
NONCE = new_nonce()


def notification(i: int, *, state: str | None = None, random_id: bool = False) -> dict[str, object]:
    """A message notification in Graph's documented shape."""
    item = secrets.token_urlsafe(96) if random_id else f"AAMkAGI2TG93AAA{i:06d}="
    return {
        "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        "subscriptionExpirationDateTime": "2026-11-27T18:23:45.9356913+00:00",
        "changeType": "created",
        "resource": f"Users/4f1b2c3d/Messages/{item}",
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": f"Users/4f1b2c3d/Messages/{item}",
            "@odata.etag": 'W/"CQAAABYAAADkrWGo7bouTKlsgTZMr9KOAAAUWRHf"',
            "id": item,
        },
        "clientState": state if state is not None else make(SECRET, NONCE),
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
    }


def post(items: list[dict[str, object]]) -> bytes:
    return json.dumps({"value": items}).encode()


def intake(body: bytes) -> tuple[int, list[bytes]]:
    """Check a POST and persist what passed, as the webhook does; the answer's status and the
    blobs written."""
    persisted: list[bytes] = []

    async def submit(blob: bytes) -> None:
        persisted.append(blob)

    checked = check(body, secret=SECRET, known=lambda nonce: nonce == NONCE)
    if isinstance(checked, Answer):
        return HTTP_STATUS[checked.outcome], persisted
    answer = asyncio.run(persist(checked, submit))
    return HTTP_STATUS[answer.outcome], persisted


def test_a_post_is_one_blob_and_blobs_of_several_posts_share_a_message() -> None:
    posts = [[notification(100 * p + i) for i in range(100)] for p in range(3)]
    persisted = []
    for items in posts:
        status, got = intake(post(items))
        assert status == 202 and len(got) == 1
        persisted += got
    message = pack(persisted)
    assert message.startswith(FORMAT)
    assert len(message) == len(FORMAT) + sum(framed(b) for b in persisted)
    assert unpack(message) == [n for items in posts for n in items]  # all of them, in order


def test_only_genuine_notifications_are_kept() -> None:
    genuine = [notification(i) for i in range(3)]
    forged = notification(9, state=make(b"another secret", NONCE))
    unknown = notification(10, state=make(SECRET, new_nonce()))
    status, got = intake(post([genuine[0], forged, genuine[1], unknown, genuine[2]]))
    assert status == 202
    assert unpack(pack(got)) == genuine
    assert intake(post([forged, unknown])) == (202, [])


def test_a_post_too_large_for_one_message_is_split_into_blobs_that_fit() -> None:
    # Random ids barely compress: 1,000 of them are far over one message.
    items = [notification(i, random_id=True) for i in range(1000)]
    body = post(items)
    assert len(zlib.compress(body, 1)) > MAX_BLOB
    status, got = intake(body)
    assert status == 202 and len(got) > 1
    assert all(len(pack([blob])) <= MAX_MESSAGE for blob in got)
    assert max(len(base64.b64encode(pack([blob]))) for blob in got) <= MAX_MESSAGE_BYTES
    assert [n for blob in got for n in unpack(pack([blob]))] == items


def test_a_failed_persist_answers_503_so_graph_delivers_again() -> None:
    async def fail(blob: bytes) -> None:
        raise OSError("queue unreachable")

    checked = check(post([notification(1)]), secret=SECRET, known=lambda n: True)
    assert not isinstance(checked, Answer)
    assert HTTP_STATUS[asyncio.run(persist(checked, fail)).outcome] == 503


def test_refusals_answer_without_persisting() -> None:
    refused = {
        b"{not json": 400,
        b'{"value": 3}': 400,
        b" " * (MAX_BODY + 1): 413,
    }
    for body, status in refused.items():
        answer = check(body, secret=SECRET, known=lambda n: True)
        assert isinstance(answer, Answer) and HTTP_STATUS[answer.outcome] == status
    unconfigured = check(post([notification(1)]), secret=None, known=lambda n: True)
    assert isinstance(unconfigured, Answer) and HTTP_STATUS[unconfigured.outcome] == 503


def test_messages_of_the_earlier_single_blob_form_are_still_read() -> None:
    items = [notification(i) for i in range(5)]
    assert unpack(b"Z1" + zlib.compress(post(items))) == items


def test_a_truncated_or_foreign_message_is_refused_as_a_contract_error() -> None:
    (blob,) = blobs([notification(1)])
    bad = {
        pack([blob])[:-3]: "truncated",
        pack([blob]) + b"\x00\x00\x00\x00": "empty",
        b'{"value": []}': "not a graph notification batch",
        FORMAT: "without notifications",
        pack([b"not zlib"]): "unreadable",
        pack([zlib.compress(b"[1, 2]")]): "is not",
        b"Z1" + zlib.compress(b'{"value": 3}'): "is not",
    }
    for message, why in bad.items():
        with pytest.raises(ContractError, match=why):
            unpack(message)


def test_a_notification_too_large_to_store_is_dropped_not_refused() -> None:
    huge = notification(1, state=make(SECRET, NONCE))
    huge["resource"] = secrets.token_urlsafe(80_000)  # incompressible, over one message
    ordinary = notification(2)
    status, got = intake(post([huge, ordinary]))
    assert status == 202  # Graph would otherwise deliver the POST again for hours
    assert [n for blob in got for n in unpack(pack([blob]))] == [ordinary]

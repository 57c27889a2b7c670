"""Entity-group transactions (`$batch`) without azure-core's multipart machinery.

`TableClient.submit_transaction` (azure-data-tables 12.7, azure-core 1.41) builds the multipart
body with the `email` package's generator and parses the answer with its parser, and starts a
thread pool for each of the two steps: 5.7 ms of client CPU for a two-entity transaction on
this machine, against 1.8 ms for a plain upsert (issue 22). `submit_transaction` here sends the
same request (the SDK still builds and signs each operation: `TableBatchOperations`), writes
the multipart body directly and splits the answer by its boundaries, then reports success and
failure exactly as the SDK does (its own error decoding: `TableTransactionError` with the
failing operation's error code, `RequestTooLargeError`, a missing table).

It reaches into the SDK's private parts (`_client`, `_batch_send`'s steps), pinned by
requirements.txt; tests/store/test_transactions.py holds it to the SDK's answers on Azurite.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable, Mapping
from email.utils import formatdate
from http.client import HTTPResponse
from typing import Any
from uuid import uuid4

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse
from azure.data.tables import TableClient, TableTransactionError, _error
from azure.data.tables._error import RequestTooLargeError
from azure.data.tables._table_batch import TableBatchOperations

# The SDK's own error decoding (untyped there).
_decode_error: Callable[..., HttpResponseError] = _error._decode_error
_validate_tablename_error: Callable[[HttpResponseError, str], None] = (
    _error._validate_tablename_error
)
_Response: Callable[..., Any] = RestHttpClientTransportResponse
_BOUNDARY = re.compile(rb"boundary=([^\s;]+)", re.IGNORECASE)


def submit_transaction(client: TableClient, operations: Iterable[Any]) -> list[Mapping[str, Any]]:
    """As `client.submit_transaction(operations)`: each operation's metadata (its ETag)."""
    batch = TableBatchOperations(
        config=client._client._config,
        endpoint=f"{client.scheme}://{client._primary_hostname}",
        table_name=client.table_name,
        is_cosmos_endpoint=client._cosmos_endpoint,
    )
    for operation in operations:
        batch.add_operation(operation)
    try:
        return _send(client, batch.requests)
    except HttpResponseError as exc:
        if exc.status_code == 400 and not batch.requests:
            return []  # as the SDK: an empty transaction is nothing done
        raise


def _body(requests: list[HttpRequest], batch: str) -> bytes:
    """The multipart body the SDK would send: one changeset, an application/http part per
    operation, each dated as the SDK's StorageHeadersPolicy dates it."""
    changeset = f"changeset_{uuid4()}"
    date = formatdate(time.time(), usegmt=True)
    out = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
    for index, request in enumerate(requests):
        request.headers["x-ms-date"] = date
        request.headers["Date"] = date
        out.append(
            f"--{changeset}\r\nContent-Type: application/http\r\n"
            f"Content-Transfer-Encoding: binary\r\nContent-ID: {index}\r\n\r\n".encode()
        )
        out.append(request.serialize())
        out.append(b"\r\n")
    out.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
    return b"".join(out)


def _send(client: TableClient, requests: list[HttpRequest]) -> list[Mapping[str, Any]]:
    batch = f"batch_{uuid4()}"
    request = HttpRequest(
        "POST",
        f"{client.scheme}://{client._primary_hostname}/$batch",
        headers={
            "x-ms-version": client.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch}",
            "Accept": "application/json",
        },
        content=_body(requests, batch),
    )
    response = client._client.send_request(request, stream=True)  # as the SDK: not decoded
    if response.status_code == 413:
        raise _decode_error(
            response,
            error_message="The transaction request was too large",
            error_type=RequestTooLargeError,
        )
    if response.status_code != 202:
        decoded = _decode_error(response)
        _validate_tablename_error(decoded, client.table_name)
        raise decoded
    raws = _parts(response.read(), response.headers.get("Content-Type", ""))
    # Status and ETag read straight from each part: building an http.client response per
    # part (headers through the email parser) cost more client CPU than the rest of the
    # answer. Only a failed part is built whole, for the SDK's error decoding.
    heads = [_head(raw) for raw in raws]
    for i, (status, _) in enumerate(heads):
        if 200 <= status < 300:
            continue
        failed = _response(raws[i], requests[min(i, len(requests) - 1)])
        if failed.status_code == 413:
            raise _decode_error(
                response,
                error_message="The transaction request was too large",
                error_type=RequestTooLargeError,
            )
        decoded = _decode_error(response=failed, error_type=TableTransactionError)
        _validate_tablename_error(decoded, client.table_name)
        raise decoded
    return [{"etag": etag} if etag is not None else {} for _, etag in heads]


def _head(raw: bytes) -> tuple[int, str | None]:
    """A part's status code and ETag header (None when it has none)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    status = head[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise HttpResponseError(message=f"$batch answer part has no status line ({head[0][:80]!r})")
    etag = None
    for line in head[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"etag":
            etag = value.strip().decode("latin-1")
    return int(status[1]), etag


def _parts(body: bytes, content_type: str) -> list[bytes]:
    """The raw HTTP responses in a `$batch` answer, in order: the parts of its changeset (or
    parts of its own, as an answer that refused the whole batch may have)."""
    found = _BOUNDARY.search(content_type.encode())
    if found is None:
        raise HttpResponseError(message=f"$batch answer is not multipart ({content_type[:80]})")
    out: list[bytes] = []
    for part in _split(body, found.group(1)):
        head, _, payload = part.partition(b"\r\n\r\n")
        inner = _BOUNDARY.search(head)
        if inner is None:
            out.append(payload)
            continue
        out.extend(sub.partition(b"\r\n\r\n")[2] for sub in _split(payload, inner.group(1)))
    return out


def _split(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between `--boundary` lines, up to the closing `--boundary--`."""
    pieces = body.split(b"--" + boundary)
    out = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        out.append(piece.removeprefix(b"\r\n"))
    return out


class _Socket:
    """What http.client reads a response from: here, bytes already received."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, *_: Any, **__: Any) -> io.BytesIO:
        return io.BytesIO(self._data)


def _response(raw: bytes, request: HttpRequest) -> Any:
    """One operation's answer (a RestHttpClientTransportResponse, as the SDK's own parts are),
    read, as the SDK's error decoding reads it."""
    answer = HTTPResponse(_Socket(raw), method=request.method)  # type: ignore[arg-type]
    answer.begin()
    response = _Response(request=request, internal_response=answer)
    response.read()
    return response

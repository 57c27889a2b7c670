"""An azure-core HTTP transport straight over urllib3, for the storage clients.

azure-core's `RequestsTransport` goes through requests, which spends more client CPU per call
than urllib3 itself (preparing the request, merging session settings, cookies, building its
own response): measured at about a third of each storage call's CPU (issue 22). This transport
keeps what we use of it: azure-core's pipeline (retries, signing, hooks) sees the same requests,
responses and exceptions; proxies and the CA bundle are taken as the old session took them;
the timeouts are the account's (store/account.py), overridable per request; no retries or
redirects here (azure-core's policies own them); streamed downloads stay streamed.
"""

from __future__ import annotations

import http.client
import os
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
import urllib3
from azure.core.configuration import ConnectionConfiguration
from azure.core.exceptions import (
    DecodeError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpResponse, HttpTransport
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.core.rest._http_response_impl import HttpResponseImpl
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import DecodeError as Urllib3DecodeError

# Connections kept per host: a worker runs up to 32 sync functions at once
# (PYTHON_THREADPOOL_THREAD_COUNT); beyond it a connection is made and dropped after use.
POOL_SIZE = 32


class _Response(http.client.HTTPResponse):
    """http.client's response, its header block read without the `email` package.

    `http.client.parse_headers` runs the email feed parser over every answer's headers: about
    0.1 ms of CPU a call, a tenth of a storage call's client CPU. Here the lines are read as
    http.client reads them (`_read_headers`: its limits on count and length) and stored in the
    same `HTTPMessage` type, so urllib3 and callers see what they saw. `begin` is http.client's
    (3.11 and 3.12 alike) but for that line.
    """

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:  # skip any 100 Continue answers
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = _header_block(self.fp)
        transfer = self.headers.get("transfer-encoding")
        self.chunked = bool(transfer and transfer.lower() == "chunked")
        self.chunk_left = None
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if (
            status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED)
            or 100 <= status < 200
            or self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True


def _header_block(fp: Any) -> http.client.HTTPMessage:
    """The header lines as an `HTTPMessage`, as `http.client.parse_headers` builds it."""
    message = http.client.HTTPMessage()
    last: str | None = None
    for raw in http.client._read_headers(fp):  # type: ignore[attr-defined]
        line = raw.decode("iso-8859-1").rstrip("\r\n")
        if line[:1] in (" ", "\t") and last is not None:  # a folded line continues the last
            value = message.get_all(last)[-1] + "\r\n" + line  # type: ignore[index]
            del message[last]  # (folding is obsolete: no storage answer uses it)
            message[last] = value
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            continue  # not a header line: the email parser would mark a defect and stop
        message[name] = value.lstrip(" \t")
        last = name
    return message


# `_Response` leans on http.client internals that 3.11 and 3.12 share; a Python without them
# keeps http.client's own response (slower headers, same answers).
_RESPONSE: type[http.client.HTTPResponse] = (
    _Response
    if hasattr(http.client, "_read_headers")
    and hasattr(http.client.HTTPResponse, "_read_status")
    and hasattr(http.client.HTTPResponse, "_check_close")
    else http.client.HTTPResponse
)


class _HTTPConnection(HTTPConnection):
    response_class = _RESPONSE


class _HTTPSConnection(HTTPSConnection):
    response_class = _RESPONSE


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def _manager(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """`manager`, making its pools with the connections above (urllib3's extension point)."""
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


class Connections:
    """Connection pools for every host the clients reach, the environment read once.

    Proxies come from the environment as requests takes them (HTTP(S)_PROXY, NO_PROXY,
    matched per host by the standard library); the CA bundle from REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE, else certifi's, as requests verifies. Thread-safe: one for the three clients.
    """

    def __init__(self, verify: bool | str = True, cert: Any = None) -> None:
        self._tls: dict[str, Any] = {}
        if verify is False:
            self._tls["cert_reqs"] = "CERT_NONE"
        else:
            bundle = verify if isinstance(verify, str) else None
            bundle = (
                bundle or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            )
            self._tls.update(cert_reqs="CERT_REQUIRED", ca_certs=bundle or certifi.where())
        if cert:  # a client certificate: a path, or (cert, key) as requests takes it
            cert_file, key_file = (cert, None) if isinstance(cert, str) else cert
            self._tls.update(cert_file=cert_file, key_file=key_file)
        proxies = urllib.request.getproxies()
        self._bypass = {"no": proxies.pop("no", "")}
        self._proxies = proxies
        self._direct = _manager(urllib3.PoolManager(maxsize=POOL_SIZE, retries=False, **self._tls))
        self._managers: dict[str, urllib3.PoolManager] = {}
        self._routes: dict[tuple[str, str], urllib3.PoolManager] = {}
        self._lock = threading.Lock()

    def manager(self, url: str, proxies: Mapping[str, str] | None = None) -> urllib3.PoolManager:
        """The pool manager that reaches `url`: direct, or through its scheme's proxy."""
        if proxies is None and not self._proxies:
            return self._direct
        parts = urlsplit(url)
        route = (parts.scheme, parts.hostname or "")
        if proxies is None:
            found = self._routes.get(route)
            if found is not None:
                return found
        chosen = (proxies if proxies is not None else self._proxies).get(parts.scheme)
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if chosen and proxies is None and self._bypass["no"] and bypass(route[1], self._bypass):
            chosen = None
        with self._lock:
            if not chosen:
                manager = self._direct
            else:
                manager = self._managers.get(chosen) or _manager(
                    urllib3.ProxyManager(chosen, maxsize=POOL_SIZE, retries=False, **self._tls)
                )
                self._managers[chosen] = manager
            if proxies is None:
                self._routes[route] = manager
        return manager

    def clear(self) -> None:
        with self._lock:
            self._direct.clear()
            for manager in self._managers.values():
                manager.clear()


class _Stream:
    """A response body in `block_size` chunks (azure-core's stream download generator)."""

    def __init__(self, pipeline: Any, response: Any, *, decompress: bool = True) -> None:
        self.pipeline = pipeline
        self.response = response
        self.request = response.request
        raw: urllib3.BaseHTTPResponse = response.internal_response
        self._raw = raw
        preloaded: bytes | None = getattr(response, "_preloaded", None)
        block = response.block_size
        if preloaded is not None:  # read whole already (a call made without stream=True)
            self._chunks: Iterator[bytes] = iter(
                [preloaded[i : i + block] for i in range(0, len(preloaded), block)]
            )
        else:
            self._chunks = raw.stream(block, decode_content=decompress)
        self.content_length = int(response.headers.get("Content-Length", 0))

    def __len__(self) -> int:
        return self.content_length

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._raw.release_conn()
            raise
        except Exception as exc:
            self._raw.close()
            raise _body_error(exc) from exc
        if not chunk:
            self._raw.release_conn()
            raise StopIteration
        return chunk


def _body_error(exc: Exception) -> Exception:
    """azure-core's error for a failure while reading a body, as RequestsTransport maps it."""
    if isinstance(exc, ProtocolError):
        if "IncompleteRead" in str(exc):
            return IncompleteReadError(exc, error=exc)
        return ServiceResponseError(exc, error=exc)
    if isinstance(exc, ReadTimeoutError):
        return ServiceResponseTimeoutError(exc, error=exc)
    if isinstance(exc, Urllib3DecodeError):
        return DecodeError(exc, error=exc)
    return exc


class Urllib3TransportResponse(HttpResponse):
    """The legacy (`azure.core.pipeline.transport`) response, which the storage SDKs use."""

    def __init__(
        self, request: Any, raw: urllib3.BaseHTTPResponse, block_size: int, body: bytes | None
    ) -> None:
        super().__init__(request, raw, block_size=block_size)
        self.status_code = raw.status
        self.headers = raw.headers
        self.reason = raw.reason
        self.content_type = raw.headers.get("content-type")
        self._preloaded = body

    def body(self) -> bytes:
        if self._preloaded is None:
            try:
                self._preloaded = self.internal_response.read(decode_content=True)
            except Exception as exc:
                self.internal_response.close()
                raise _body_error(exc) from exc
            self.internal_response.release_conn()
        return self._preloaded

    def stream_download(self, pipeline: Any, **kwargs: Any) -> Iterator[bytes]:
        return _Stream(pipeline, self, **kwargs)


class RestUrllib3TransportResponse(HttpResponseImpl):
    """The `azure.core.rest` response, which azure-data-tables uses."""

    def __init__(self, *, request: Any, internal_response: Any, block_size: int) -> None:
        super().__init__(
            request=request,
            internal_response=internal_response,
            block_size=block_size,
            status_code=internal_response.status,
            reason=internal_response.reason,
            headers=internal_response.headers,
            content_type=internal_response.headers.get("content-type"),
            stream_download_generator=_Stream,
        )


class Urllib3Transport(HttpTransport[Any, Any]):
    """azure-core's sync HTTP transport over urllib3 (no requests).

    `session` is the `Connections` to use (shared by the three clients); without one the
    transport makes its own. The keywords are RequestsTransport's, so wrappers that build a
    transport of the same type with `session=` and `session_owner=` work with either.
    """

    def __init__(
        self, *, session: Connections | None = None, session_owner: bool = True, **kwargs: Any
    ) -> None:
        self.connection_config = ConnectionConfiguration(**kwargs)
        config = self.connection_config
        self._owner = session is None or session_owner
        self.session = session or Connections(config.verify, config.cert)
        # Per-request verify/cert (rare): pools of their own, made once.
        self._other_tls: dict[tuple[Any, Any], Connections] = {}
        # urllib3's Timeout for the configured (connect, read), remade if the configuration
        # changes (one tuple, swapped whole: threads share the transport).
        self._timeout = ((config.timeout, config.read_timeout), _timeout(config))

    def __enter__(self) -> Urllib3Transport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    def open(self) -> None:
        """Nothing to open: pools connect on first use."""

    def close(self) -> None:
        if self._owner:
            self.session.clear()

    def _connections(self, verify: Any, cert: Any) -> Connections:
        config = self.connection_config
        if verify == config.verify and cert == config.cert:
            return self.session
        key = (verify, cert if not isinstance(cert, list) else tuple(cert))
        found = self._other_tls.get(key)
        if found is None:
            found = self._other_tls.setdefault(key, Connections(verify, cert))
        return found

    def send(self, request: Any, *, proxies: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        config = self.connection_config
        stream = bool(kwargs.get("stream", False))
        connect = kwargs.pop("connection_timeout", config.timeout)
        read = kwargs.pop("read_timeout", config.read_timeout)
        if isinstance(connect, tuple):  # the deprecated (connect, read) form
            connect, read = connect
        configured, timeout = self._timeout
        if (connect, read) != configured:
            if (connect, read) == (config.timeout, config.read_timeout):
                timeout = _timeout(config)  # the configuration changed since
                self._timeout = ((connect, read), timeout)
            else:  # a per-request override
                timeout = urllib3.Timeout(connect=connect, read=read)
        connections = self._connections(
            kwargs.pop("connection_verify", config.verify),
            kwargs.pop("connection_cert", config.cert),
        )
        url = str(request.url)
        try:
            raw = connections.manager(url, proxies).urlopen(
                request.method,
                url,
                body=_body(request),
                headers=request.headers,
                retries=False,
                redirect=False,
                timeout=timeout,
                preload_content=not stream,
                decode_content=True,
            )
        except NewConnectionError as exc:  # before its base class, ConnectTimeoutError
            raise ServiceRequestError(exc, error=exc) from exc
        except ConnectTimeoutError as exc:
            raise ServiceRequestTimeoutError(exc, error=exc) from exc
        except ReadTimeoutError as exc:
            raise ServiceResponseTimeoutError(exc, error=exc) from exc
        except ProtocolError as exc:  # reset or closed mid-exchange, a body cut short
            raise _body_error(exc) from exc
        except Urllib3DecodeError as exc:
            raise DecodeError(exc, error=exc) from exc
        except HTTPError as exc:  # TLS, proxy: the request did not get through
            raise ServiceRequestError(exc, error=exc) from exc
        return self.response(request, raw, stream=stream)

    def response(self, request: Any, raw: urllib3.BaseHTTPResponse, *, stream: bool) -> Any:
        """azure-core's response to `request` for urllib3's `raw` (read whole unless `stream`)."""
        block_size = self.connection_config.data_block_size
        body = None if stream else raw.data
        if isinstance(request, RestHttpRequest):  # as azure-core's is_rest, without probing
            response = RestUrllib3TransportResponse(
                request=request, internal_response=raw, block_size=block_size
            )
            if body is not None:
                response._content = body
                response._set_read_checks()  # type: ignore[no-untyped-call]
            return response
        return Urllib3TransportResponse(request, raw, block_size, body)


def _timeout(config: ConnectionConfiguration) -> urllib3.Timeout:
    """Connect, then each socket read (not the whole answer): as requests applies them."""
    return urllib3.Timeout(connect=config.timeout, read=config.read_timeout)


def _body(request: Any) -> Any:
    """The request's body as urllib3 takes it."""
    if request.files:
        raise ValueError("multipart form uploads are not supported by this transport")
    data = request.data
    if isinstance(data, Mapping):  # a form (azure-core leaves its encoding to the transport)
        return urlencode(data, doseq=True)
    return data

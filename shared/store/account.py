"""One way to reach the storage account, whether by connection string or by managed identity.

The setting names follow the Functions host's identity-based connections, so the app and the
host read the same `AzureWebJobsStorage` / `AzureWebJobsStorage__*` settings.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from azure.core.configuration import ConnectionConfiguration
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import HttpTransport, RequestsTransport
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from .blobs import BLOCK_BYTES
from .transport import Connections, Urllib3Transport

# "urllib3" (the default) or "requests" (azure-core's own transport, kept for comparison).
Http = Literal["urllib3", "requests"]

# Seconds to connect, and to wait for each socket read (not a whole answer or download), per
# attempt. azure-core's own defaults are 300 s each: a hung connection would hold a function for
# minutes per attempt, and the SDKs try 4 times, while the Functions host gives up at 5-10 min.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
# What a streamed answer is read in: the storage SDKs' own (azure.storage.*._shared.constants).
DATA_BLOCK_BYTES = 256 * 1024


@dataclass(frozen=True)
class StorageSettings:
    """Where the account is: a connection string, or service URIs plus an identity."""

    connection_string: str | None = None
    blob_uri: str | None = None
    queue_uri: str | None = None
    table_uri: str | None = None
    credential: str | None = None  # "managedidentity" or None (DefaultAzureCredential)
    client_id: str | None = None

    def __post_init__(self) -> None:
        uris = (self.blob_uri, self.queue_uri, self.table_uri)
        if not self.connection_string and not all(uris):
            raise ValueError(
                "storage is not configured: set AzureWebJobsStorage to a connection string, or "
                "AzureWebJobsStorage__blobServiceUri, __queueServiceUri and __tableServiceUri "
                "for managed identity"
            )


class RequestCounter:
    """Counts storage requests per service; `make bench` reports calls per filed message."""

    def __init__(self, *, record: bool = False) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        # With `record`, each request's service, method and path (no query: it can hold a SAS).
        self.calls: list[tuple[str, str, str]] | None = [] if record else None

    def transport(self, service: str, session: Any = None) -> HttpTransport[Any, Any]:
        """An HTTP transport that counts every request it sends (retries included): over
        urllib3, or azure-core's RequestsTransport when `session` is a requests session."""
        counter = self
        base = transport_type(session)

        class _CountingTransport(base):  # type: ignore[misc,valid-type]
            def send(self, request: Any, **kwargs: Any) -> Any:
                with counter._lock:
                    counter.counts[service] = counter.counts.get(service, 0) + 1
                    if counter.calls is not None:
                        path = str(request.url).split("?", 1)[0].split("/", 3)[-1]
                        counter.calls.append((service, str(request.method), path))
                return super().send(request, **kwargs)

        return _CountingTransport(session=session, session_owner=session is None)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            if self.calls is not None:
                self.calls.clear()


def transport_type(session: Any) -> Any:
    """The transport class that takes `session` (see `_session`)."""
    if session is None or isinstance(session, Connections):
        return Urllib3Transport
    return RequestsTransport


def _session(http: Http) -> Any:
    """The connections the three clients share: urllib3's pools (see transport.py), or for
    `requests` a requests session that reads the environment once, not on every request.

    With `trust_env` on (requests' default) every call scans the proxy variables and
    NO_PROXY: measured at a quarter of the webhook's CPU per POST. This session takes the
    proxies and CA bundle as they are at start-up instead. Per-host bypass rules (NO_PROXY
    beside a proxy) are left to requests: then the session reads the environment per call.
    """
    if http == "urllib3":
        return Connections()
    import urllib.request

    import requests

    proxies = urllib.request.getproxies()
    bypass = proxies.pop("no", None)
    if proxies and bypass:
        return requests.Session()
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(proxies)
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if ca_bundle:
        session.verify = ca_bundle
    return session


@dataclass
class StorageAccount:
    """The three service clients, built one way for Azurite and for Azure."""

    settings: StorageSettings
    counter: RequestCounter | None = None
    http: Http = "urllib3"
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _http: list[Any] = field(default_factory=list, init=False, repr=False)  # [session] once made

    def _kwargs(self, service: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if service == "blob":
            # Anything over 4 MiB goes up in 4 MiB blocks and comes down in 4 MiB chunks: the
            # SDK's single put (up to 64 MiB) reads a whole stream into memory first.
            kwargs.update(
                max_single_put_size=BLOCK_BYTES,
                max_block_size=BLOCK_BYTES,
                max_single_get_size=BLOCK_BYTES,
                max_chunk_get_size=BLOCK_BYTES,
            )
        if not self._http:  # one session (and connection pool) for the three clients
            self._http.append(_session(self.http))
        session = self._http[0]
        # The timeouts go to the transport: the SDKs pass `connection_timeout`/`read_timeout`
        # only to a transport they build themselves, never to one they are given.
        # So does the block size a streamed body is read in (azure-core's own default is 4 KiB:
        # a 4 MiB blob chunk in 1,024 reads).
        settings = {
            "connection_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "connection_data_block_size": DATA_BLOCK_BYTES,
        }
        if self.counter is not None:
            transport = self.counter.transport(service, session)
            # Its subclasses (tests) build their transport as they like: give it the same
            # settings. Both transports read them from `connection_config` on every send.
            config: ConnectionConfiguration = transport.connection_config  # type: ignore[attr-defined]
            config.timeout, config.read_timeout = self.connect_timeout, self.read_timeout
            config.data_block_size = DATA_BLOCK_BYTES
        else:
            transport = transport_type(session)(session=session, session_owner=False, **settings)
        kwargs["transport"] = transport
        return kwargs

    def _credential(self) -> TokenCredential:
        # Imported here: azure-identity pulls in msal, which the webhook path should not pay for.
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        if (self.settings.credential or "").lower() == "managedidentity":
            if self.settings.client_id:
                return ManagedIdentityCredential(client_id=self.settings.client_id)
            return ManagedIdentityCredential()
        return DefaultAzureCredential()

    def _client(self, service: str) -> Any:
        with self._lock:
            if service in self._clients:
                return self._clients[service]
            cls: Any = {
                "blob": BlobServiceClient,
                "queue": QueueServiceClient,
                "table": TableServiceClient,
            }[service]
            if self.settings.connection_string:
                client = cls.from_connection_string(
                    self.settings.connection_string, **self._kwargs(service)
                )
            else:
                uri = getattr(self.settings, f"{service}_uri")
                client = cls(uri, credential=self._credential(), **self._kwargs(service))
            self._clients[service] = client
            return client

    @property
    def blobs(self) -> BlobServiceClient:
        client: BlobServiceClient = self._client("blob")
        return client

    @property
    def queues(self) -> QueueServiceClient:
        client: QueueServiceClient = self._client("queue")
        return client

    @property
    def tables(self) -> TableServiceClient:
        client: TableServiceClient = self._client("table")
        return client

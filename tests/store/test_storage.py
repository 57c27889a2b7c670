"""The adapters against Azurite: round trips, batches, ETags, queue encoding, blobs."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from azure.storage.queue import QueueClient

from shared.cli.azurite import Azurite
from shared.core.contracts import InboundMessage
from shared.store.account import StorageAccount, StorageSettings
from shared.store.errors import ContractError, StorageLimitError
from shared.store.queues import decode
from shared.store.stores import INBOUND, RECORDS, Stores

pytestmark = pytest.mark.azurite


def test_table_round_trip_keeps_types(stores: Stores) -> None:
    table = stores.table(RECORDS)
    at = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
    assert table.insert({"PartitionKey": "p", "RowKey": "r", "Big": 2**40, "At": at, "S": "ü"})
    assert table.insert({"PartitionKey": "p", "RowKey": "r"}) is None  # exists: idempotent
    got = table.get("p", "r")
    assert got is not None
    assert (got["Big"], got["At"], got["S"]) == (2**40, at, "ü")
    assert table.get("p", "missing") is None


def test_batches_are_split_at_100_operations(stores: Stores) -> None:
    table = stores.table(RECORDS)
    sent = table.upsert_batch(
        [{"PartitionKey": "p", "RowKey": f"{i:04d}", "N": i} for i in range(250)]
        + [{"PartitionKey": "q", "RowKey": "x", "N": 1}]
    )
    assert sent == 4  # 100 + 100 + 50 in partition p, 1 in q
    assert len(list(table.partition("p"))) == 250


def test_etag_guards_concurrent_updates(stores: Stores) -> None:
    table = stores.table(RECORDS)
    etag = table.insert({"PartitionKey": "p", "RowKey": "c", "Value": 1})
    assert etag
    assert table.update_if_unchanged({"PartitionKey": "p", "RowKey": "c", "Value": 2}, etag)
    # A second writer still holding the old ETag loses instead of overwriting.
    assert not table.update_if_unchanged({"PartitionKey": "p", "RowKey": "c", "Value": 3}, etag)
    got = table.get("p", "c")
    assert got is not None and got["Value"] == 2


def test_queue_messages_are_base64_as_the_functions_trigger_expects(
    stores: Stores, azurite: Azurite
) -> None:
    message = InboundMessage(mailbox="m", source_id="s", blob="ab/cd.eml")
    stores.queues.send(INBOUND, message)
    plain = QueueClient.from_connection_string(azurite.connection_string, INBOUND)
    (raw,) = list(plain.peek_messages(max_messages=1))
    body = base64.b64decode(raw.content, validate=True)  # what the trigger decodes
    assert decode(body, InboundMessage) == message


def test_queue_refuses_messages_over_64_kib(stores: Stores) -> None:
    with pytest.raises(StorageLimitError, match="64 KiB"):
        stores.queues.send_bytes(INBOUND, b"x" * 49_200)
    stores.queues.send_bytes(INBOUND, b"x" * 49_000)


def test_contract_errors_name_the_model() -> None:
    with pytest.raises(ContractError, match="not a valid InboundMessage"):
        decode(b'{"v": 2, "mailbox": "m", "source_id": "s", "blob": "b"}', InboundMessage)
    with pytest.raises(ContractError):
        decode(b"\xff\xfe", InboundMessage)


def test_raw_mail_is_content_addressed(stores: Stores) -> None:
    first = stores.blobs.put_raw(b"From: a@b\r\n\r\nhi\r\n")
    again = stores.blobs.put_raw(b"From: a@b\r\n\r\nhi\r\n")
    assert first == again and first.endswith(".eml")
    assert stores.blobs.get(first) == b"From: a@b\r\n\r\nhi\r\n"
    assert stores.blobs.get("00/missing.eml") is None


def test_requests_are_counted_per_service(stores: Stores) -> None:
    assert stores.account.counter is not None
    stores.table(RECORDS).get("p", "r")
    stores.queues.depth(INBOUND)
    assert stores.account.counter.snapshot() == {"table": 1, "queue": 1}


def test_managed_identity_uses_service_uris_and_a_token_credential() -> None:
    from azure.identity import ManagedIdentityCredential

    account = StorageAccount(
        StorageSettings(
            blob_uri="https://acct.blob.core.windows.net",
            queue_uri="https://acct.queue.core.windows.net",
            table_uri="https://acct.table.core.windows.net",
            credential="managedidentity",
            client_id="00000000-0000-0000-0000-000000000001",
        )
    )
    assert account.queues.url.startswith("https://acct.queue.core.windows.net")
    assert isinstance(account.queues.credential, ManagedIdentityCredential)
    assert account.tables.url.startswith("https://acct.table.core.windows.net")


def test_storage_settings_say_what_is_missing() -> None:
    with pytest.raises(ValueError, match="AzureWebJobsStorage__blobServiceUri"):
        StorageSettings(blob_uri="https://x.blob.core.windows.net")

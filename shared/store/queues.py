"""Storage queues carrying versioned pydantic contracts, encoded as the queue trigger reads them.

The queue trigger expects base64 (host.json `messageEncoding`); azure-storage-queue sends plain
text unless told otherwise, and a mismatch sends every message silently to the poison queue.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from typing import TypeVar

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    QueueClient,
    QueueServiceClient,
)
from pydantic import BaseModel, ValidationError

from ..core.errors import ContractError
from .errors import StorageLimitError

MAX_MESSAGE_BYTES = 64 * 1024  # after base64
M = TypeVar("M", bound=BaseModel)


def encode(contract: BaseModel) -> bytes:
    """The contract's JSON; `Queues.send_bytes` checks it against the 64 KiB limit."""
    return contract.model_dump_json(exclude_none=True).encode("utf-8")


def decode(body: bytes | str, model: type[M]) -> M:
    """Parse a queue message body (already base64-decoded by the trigger) into `model`."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ContractError(f"not a valid {model.__name__}: {exc.errors()[0]['msg']}") from exc


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ContractError("queue message is not base64") from exc


@dataclass(frozen=True)
class Received:
    id: str
    pop_receipt: str
    body: bytes
    dequeue_count: int


class Queues:
    """Send, receive and inspect queues by name, always base64 on the wire."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._clients: dict[str, QueueClient] = {}

    def client(self, name: str) -> QueueClient:
        if name not in self._clients:
            self._clients[name] = self._service.get_queue_client(
                name,
                message_encode_policy=BinaryBase64EncodePolicy(),
                message_decode_policy=BinaryBase64DecodePolicy(),
            )
        return self._clients[name]

    def create(self, name: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            self.client(name).create_queue()

    def send(self, name: str, contract: BaseModel, *, delay_seconds: int | None = None) -> None:
        self.send_bytes(name, encode(contract), delay_seconds=delay_seconds)

    def send_bytes(self, name: str, body: bytes, *, delay_seconds: int | None = None) -> None:
        encoded = (len(body) + 2) // 3 * 4  # base64 on the wire
        if encoded > MAX_MESSAGE_BYTES:
            raise StorageLimitError(
                f"queue {name}: message is {encoded} bytes in base64, the limit is 64 KiB"
            )
        self.client(name).send_message(body, visibility_timeout=delay_seconds)

    def receive(self, name: str, *, max_messages: int, visibility_timeout: int) -> list[Received]:
        # One request: the first page only (the pager would otherwise ask again until empty).
        pages = (
            self.client(name)
            .receive_messages(messages_per_page=max_messages, visibility_timeout=visibility_timeout)
            .by_page()
        )
        page = next(pages, None)
        out: list[Received] = []
        for msg in page or ():
            out.append(
                Received(
                    id=msg.id,
                    pop_receipt=msg.pop_receipt or "",
                    body=msg.content,
                    dequeue_count=msg.dequeue_count or 1,
                )
            )
        return out

    def delete(self, name: str, message: Received) -> None:
        # Already gone means its lease expired and another worker took it: nothing to do.
        with contextlib.suppress(ResourceNotFoundError):
            self.client(name).delete_message(message.id, message.pop_receipt)

    def release(self, name: str, message: Received, *, after_seconds: int) -> None:
        """Make a message visible again after a failure (host.json `visibilityTimeout`)."""
        with contextlib.suppress(ResourceNotFoundError):
            self.client(name).update_message(
                message.id, message.pop_receipt, visibility_timeout=after_seconds
            )

    def depth(self, name: str) -> int | None:
        try:
            props = self.client(name).get_queue_properties()
        except ResourceNotFoundError:
            return None
        return int(props.approximate_message_count or 0)

    def peek(self, name: str, count: int = 32) -> list[bytes]:
        return [m.content for m in self.client(name).peek_messages(max_messages=count)]

    def clear(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.client(name).clear_messages()

"""Table Storage with Azure's real limits enforced before a request leaves the process.

Azurite accepts entities Azure refuses (FACTS.md: 300 properties, 1.28 MB entities, batches over
100). Checking here makes a test on Azurite fail the way production would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from .errors import StorageLimitError
from .transactions import submit_transaction

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024  # UTF-16 bytes
MAX_PROPERTY_BYTES = 64 * 1024  # a string (UTF-16) or binary property
MAX_ENTITY_BYTES = 1024 * 1024
MAX_OWN_PROPERTIES = 252  # plus PartitionKey, RowKey and Timestamp
MAX_BATCH_OPERATIONS = 100
MAX_BATCH_BYTES = 4 * 1024 * 1024
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
_FORBIDDEN_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# What a transaction answers when another writer changed one of its rows first.
_LOST_RACE = {"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound"}

Entity = dict[str, Any]


def _utf16_bytes(text: str) -> int:
    """`len(text.encode("utf-16-le"))`, without encoding ASCII text (most of it) to count."""
    return 2 * len(text) if text.isascii() else len(text.encode("utf-16-le"))


def check_key(kind: str, key: str) -> None:
    if not isinstance(key, str):
        raise StorageLimitError(f"{kind} must be a string, not {type(key).__name__}")
    if _FORBIDDEN_KEY.search(key):
        raise StorageLimitError(f"{kind} {key[:80]!r} contains / \\ # ? or a control character")
    if _utf16_bytes(key) > MAX_KEY_BYTES:
        raise StorageLimitError(f"{kind} is longer than 1 KiB ({len(key)} characters)")


def _property_size(name: str, value: Any) -> int:
    """Roughly what Azure bills the property at: name + value, UTF-16 for text."""
    size = 8 + len(name) * 2
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, str):
        size += _utf16_bytes(value)
    elif isinstance(value, bytes):
        size += len(value)
    else:
        size += 8
    return size


def to_storage(entity: Mapping[str, Any], table: str = "?") -> Entity:
    """Validate `entity` against Azure's limits and encode ints as Int64 where they need it."""
    pk, rk = entity.get("PartitionKey"), entity.get("RowKey")
    where = f"table {table}, PartitionKey {str(pk)[:60]!r}, RowKey {str(rk)[:60]!r}"
    check_key("PartitionKey", pk)  # type: ignore[arg-type]
    check_key("RowKey", rk)  # type: ignore[arg-type]
    own = [k for k in entity if k not in ("PartitionKey", "RowKey")]
    if len(own) > MAX_OWN_PROPERTIES:
        raise StorageLimitError(
            f"{where}: {len(own)} properties, Azure allows {MAX_OWN_PROPERTIES}"
        )
    out: Entity = {"PartitionKey": pk, "RowKey": rk}
    total = 4 + _property_size("PartitionKey", pk) + _property_size("RowKey", rk)
    for name in own:
        value = entity[name]
        if not _PROPERTY_NAME.match(name):
            raise StorageLimitError(f"{where}: property name {name!r} is not a C# identifier")
        raw = value.value if isinstance(value, EntityProperty) else value
        if isinstance(raw, str) and _utf16_bytes(raw) > MAX_PROPERTY_BYTES:
            raise StorageLimitError(f"{where}: property {name} is over 64 KiB ({len(raw)} chars)")
        if isinstance(raw, bytes) and len(raw) > MAX_PROPERTY_BYTES:
            raise StorageLimitError(f"{where}: property {name} is over 64 KiB ({len(raw)} bytes)")
        if isinstance(raw, bool) or raw is None:
            pass
        elif isinstance(raw, int):
            if raw not in _INT64:
                raise StorageLimitError(f"{where}: property {name} does not fit in Int64")
            if raw not in _INT32 and not isinstance(value, EntityProperty):
                value = EntityProperty(raw, EdmType.INT64)
        elif isinstance(raw, datetime) and raw.tzinfo is None:
            raise StorageLimitError(f"{where}: property {name} is a naive datetime")
        if value is None:
            continue  # Table Storage has no nulls: an absent property reads back as missing
        out[name] = value
        total += _property_size(name, value)
    if total > MAX_ENTITY_BYTES:
        raise StorageLimitError(f"{where}: entity is {total} bytes, Azure allows 1 MiB")
    return out


def from_storage(entity: Mapping[str, Any]) -> Entity:
    """Plain Python values, with the ETag kept under `_etag` for optimistic concurrency."""
    out: Entity = {k: (v.value if isinstance(v, EntityProperty) else v) for k, v in entity.items()}
    metadata = getattr(entity, "metadata", None)
    if metadata:
        out["_etag"] = metadata.get("etag")
    return out


class Table:
    """One table. Every write goes through `to_storage`; reads return plain values."""

    def __init__(self, service: TableServiceClient, name: str) -> None:
        self.name = name
        self._service = service
        self.client: TableClient = service.get_table_client(name)

    def create(self) -> None:
        # Through this table's own client: the service's create_table builds a client (and
        # relinks the shared pipeline policies) per call, which races other threads' requests
        # ("'_SansIOHTTPPolicyRunner' object has no attribute 'next'").
        with contextlib.suppress(ResourceExistsError):
            self.client.create_table()

    def get(self, pk: str, rk: str) -> Entity | None:
        check_key("PartitionKey", pk)
        check_key("RowKey", rk)
        try:
            return from_storage(self.client.get_entity(pk, rk))
        except ResourceNotFoundError:
            return None

    def insert(self, entity: Mapping[str, Any]) -> str | None:
        """Create the entity and return its ETag; None if one with these keys exists."""
        try:
            metadata = self.client.create_entity(to_storage(entity, self.name))
        except ResourceExistsError:
            return None
        return str(metadata.get("etag") or "")

    def upsert(
        self, entity: Mapping[str, Any], mode: Literal["merge", "replace"] = "merge"
    ) -> None:
        update_mode = UpdateMode.MERGE if mode == "merge" else UpdateMode.REPLACE
        self.client.upsert_entity(to_storage(entity, self.name), mode=update_mode)

    def update_if_unchanged(self, entity: Mapping[str, Any], etag: str) -> bool:
        """Merge `entity` only if nobody changed it since `etag`; False on a conflict."""
        try:
            self.client.update_entity(
                to_storage(entity, self.name),
                mode=UpdateMode.MERGE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def delete(self, pk: str, rk: str) -> None:
        self.client.delete_entity(pk, rk)

    def partition(
        self,
        pk: str,
        select: list[str] | None = None,
        *,
        row_from: str | None = None,
        row_before: str | None = None,
        where: str | None = None,
        parameters: dict[str, Any] | None = None,
        first: int | None = None,
    ) -> Iterator[Entity]:
        """The partition's entities; `row_from` and `row_before` bound the RowKeys, `where` adds an
        OData condition whose values come in `parameters` (never formatted into the text);
        `first` stops after one request of at most that many rows."""
        check_key("PartitionKey", pk)
        query = "PartitionKey eq @pk"
        parameters = {**(parameters or {}), "pk": pk}
        if row_from is not None:
            query += " and RowKey ge @rk"
            parameters["rk"] = row_from
        if row_before is not None:
            query += " and RowKey lt @rk_end"
            parameters["rk_end"] = row_before
        if where:
            # Spaces inside the parentheses: the SDK finds parameters by splitting on spaces.
            query += f" and ( {where} )"
        pages = self.client.query_entities(
            query, parameters=parameters, select=select, results_per_page=first
        ).by_page()
        for page_number, page in enumerate(pages):
            for entity in page:
                yield from_storage(entity)
            if first is not None and page_number == 0:
                return  # `first` rows at most, in one request

    def query(self, where: str, parameters: dict[str, Any]) -> Iterator[Entity]:
        """Entities of any partition matching an OData condition (values in `parameters`)."""
        for entity in self.client.query_entities(where, parameters=parameters):
            yield from_storage(entity)

    def all(self, select: list[str] | None = None) -> Iterator[Entity]:
        for entity in self.client.list_entities(select=select):
            yield from_storage(entity)

    def transact(
        self, operations: Iterable[tuple[Literal["insert", "upsert"], Mapping[str, Any]]]
    ) -> bool:
        """Inserts and merges in one partition, all or nothing, in one request.

        False when an insert found its row already there (a redelivery, a concurrent writer):
        then nothing was written, and the caller decides what to do one by one.
        """
        ops: list[Any] = []
        for kind, entity in operations:
            stored = to_storage(entity, self.name)
            ops.append(
                ("create", stored)
                if kind == "insert"
                else ("upsert", stored, {"mode": UpdateMode.MERGE})
            )
        if not ops:
            return True
        return self._submit(ops, ("EntityAlreadyExists",))

    def transact_if_unchanged(
        self, operations: Iterable[tuple[Mapping[str, Any], str | None]]
    ) -> bool:
        """Writes in one partition, all or nothing, in one request: an entity whose ETag is None
        is inserted (it must not exist), the others merged only if unchanged since their ETag.

        False when another writer got there first (a row now exists, changed or went away):
        then nothing was written, and the caller reads again.
        """
        ops: list[Any] = []
        for entity, etag in operations:
            stored = to_storage(entity, self.name)
            ops.append(
                ("create", stored)
                if etag is None
                else (
                    "update",
                    stored,
                    {
                        "mode": UpdateMode.MERGE,
                        "etag": etag,
                        "match_condition": MatchConditions.IfNotModified,
                    },
                )
            )
        try:
            return self._submit(ops, _LOST_RACE)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False

    def transact_rows(
        self,
        operations: Iterable[
            tuple[Literal["insert", "update", "upsert", "delete"], Mapping[str, Any], str | None]
        ],
    ) -> bool:
        """Inserts, merges and deletes in one partition, all or nothing, in one request: an
        insert needs its row absent; an update (merge) or a delete needs it present, and
        unchanged since the ETag when one is given; an upsert merges, present or not (no ETag).
        False when another writer got there first (nothing was written): the caller reads
        again."""
        ops: list[Any] = []
        for kind, entity, etag in operations:
            if kind == "delete":
                pk, rk = entity["PartitionKey"], entity["RowKey"]
                check_key("PartitionKey", pk)
                check_key("RowKey", rk)
                stored: Entity = {"PartitionKey": pk, "RowKey": rk}
            else:
                stored = to_storage(entity, self.name)
            if kind == "insert":
                ops.append(("create", stored))
                continue
            if kind == "upsert":
                ops.append(("upsert", stored, {"mode": UpdateMode.MERGE}))
                continue
            options: dict[str, Any] = {"mode": UpdateMode.MERGE} if kind == "update" else {}
            if etag is not None:
                options.update(etag=etag, match_condition=MatchConditions.IfNotModified)
            ops.append((kind, stored, options))
        try:
            return self._submit(ops, _LOST_RACE)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False

    def _submit(self, ops: list[Any], lost: Container[str]) -> bool:
        """One partition's transaction; False when it failed with one of the `lost` codes."""
        if len(ops) > MAX_BATCH_OPERATIONS or len({o[1]["PartitionKey"] for o in ops}) > 1:
            raise StorageLimitError(
                f"table {self.name}: a transaction is one partition, <= 100 rows"
            )
        if len(ops) == 1 and ops[0][0] != "delete":
            return self._single(ops[0], lost)
        try:
            submit_transaction(self.client, ops)
        except TableTransactionError as exc:
            if getattr(exc, "error_code", None) in lost:
                return False
            raise
        return True

    def _single(self, op: Any, lost: Container[str]) -> bool:
        """A transaction of one write, sent as the plain call it is equivalent to: the SDK
        spends about three times the client CPU on a `$batch` (a thread pool per request, the
        multipart answer parsed with the email parser). Deletes stay batched: a plain delete of
        a missing row succeeds, where the transaction reports it."""
        kind, entity = op[0], op[1]
        options: dict[str, Any] = op[2] if len(op) > 2 else {}
        try:
            if kind == "create":
                self.client.create_entity(entity)
            elif kind == "upsert":
                self.client.upsert_entity(entity, **options)
            else:
                self.client.update_entity(entity, **options)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            if _error_code(exc) in lost:  # as the transaction would have answered
                return False
            # Any other failure (a missing table...) fails as the transaction would have: not
            # as a lost race, which the callers above turn into False.
            raise HttpResponseError(message=str(exc), response=exc.response) from exc
        return True

    def upsert_batch(self, entities: Iterable[Mapping[str, Any]]) -> int:
        """Upsert (merge) entities in transactions of at most 100 per partition.

        Each transaction is atomic; a list spanning partitions is several transactions.
        Returns the number of transactions sent.
        """
        by_partition: dict[str, list[Entity]] = {}
        for entity in entities:
            stored = to_storage(entity, self.name)
            by_partition.setdefault(stored["PartitionKey"], []).append(stored)
        sent = 0
        for items in by_partition.values():
            for start in range(0, len(items), MAX_BATCH_OPERATIONS):
                chunk = items[start : start + MAX_BATCH_OPERATIONS]
                size = sum(_property_size(k, v) for e in chunk for k, v in e.items())
                if size > MAX_BATCH_BYTES:
                    raise StorageLimitError(f"table {self.name}: batch of {size} bytes over 4 MiB")
                if len(chunk) == 1:  # a plain upsert: see _single
                    self.client.upsert_entity(chunk[0], mode=UpdateMode.MERGE)
                    sent += 1
                    continue
                ops: list[Any] = [("upsert", e, {"mode": UpdateMode.MERGE}) for e in chunk]
                try:
                    submit_transaction(self.client, ops)
                except TableTransactionError:
                    log.exception("table %s: transaction failed", self.name)
                    raise
                sent += 1
        return sent


def _error_code(exc: HttpResponseError) -> str | None:
    """The service's error code (a missing row and a missing table are both a 404)."""
    code = getattr(exc, "error_code", None)  # an enum where the SDK sets it, for some calls
    if code:
        return str(getattr(code, "value", code))
    try:
        return str(json.loads(exc.response.text())["odata.error"]["code"]) if exc.response else None
    except (ValueError, KeyError, TypeError):
        return None


def transact_each(
    table: Table, groups: Iterable[Sequence[tuple[Literal["insert", "upsert"], Mapping[str, Any]]]]
) -> None:
    """Each group in one transaction; where an insert finds its row there, the group's other
    writes go one by one (the insert is already done: a redelivery or a concurrent writer)."""
    for operations in groups:
        if table.transact(operations):
            continue
        for op, entity in operations:
            if op == "insert":
                table.insert(entity)
            else:
                table.upsert(entity)

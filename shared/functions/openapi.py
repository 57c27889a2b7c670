"""The OpenAPI 3.1 document of the HTTP API, its schemas generated from pydantic models."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

REF = "#/components/schemas/{model}"
# Field values as Table Storage holds them: Int64 integers, strings of at most 64 KiB in UTF-16.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
FieldText = Annotated[str, Field(max_length=32 * 1024)]
# Not empty and not only what the API strips (spaces, angle brackets): a search, so unanchored.
MESSAGE_ID = r"[^\s<>]"


class Error(BaseModel):
    class Detail(BaseModel):
        code: str
        message: str

    error: Detail


class TimelineItem(BaseModel):
    message_key: str | None
    message_id: str | None
    direction: str | None
    kind: str
    date: str | None
    model_config = ConfigDict(extra="allow")


class Record(BaseModel):
    type: str
    key: str
    id: str | None = Field(description="display id, e.g. CASE-12")
    number: int | None
    title: str
    status: str | None
    contact: str | None
    mailbox: str | None
    tags: list[str]
    fields: dict[str, str | int]
    created_at: str | None
    updated_at: str | None


class RecordWithTimeline(Record):
    timeline: list[TimelineItem]


class RecordPage(BaseModel):
    records: list[Record]
    continuation: str | None = Field(description="pass as ?continuation= for the next page")


class RecordPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    status: str | None = Field(default=None, description="one of the record type's statuses")
    fields: dict[str, FieldText | Int64 | None] | None = Field(
        default=None, description="fields of the record type; null leaves a field as it is"
    )


class FileByMessageId(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(pattern=MESSAGE_ID, description="with or without <>")


class FileBySource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mailbox: str = Field(min_length=1)
    source_id: str = Field(min_length=1)


class Filed(BaseModel):
    message_key: str
    record: str | None
    status: str


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, description="the reply's text (plain text)")
    to: list[str] | None = Field(
        default=None, description="recipients; default: the record's contact"
    )
    cc: list[str] | None = None
    subject: str | None = Field(default=None, description="default: Re: <the record's title>")
    mailbox: str | None = Field(default=None, description="default: the record's mailbox")
    attachments: list[str] | None = Field(
        default=None,
        description="blobs of attachments of the record's mail (as the record's timeline lists "
        "them), sent again with the reply",
    )


class ReplyQueued(BaseModel):
    id: str
    record: str | None
    to: list[str]
    status: str


class MessageStatus(BaseModel):
    key: str
    message_id: str | None
    status: str | None = Field(
        description="filed, dropped, rejected or held; pending while ingested, not yet settled"
    )
    filed: dict[str, Any] | None = Field(description="the record it is filed on, and why")
    also: list[dict[str, Any]] = Field(description="further records one mail opened")
    unfiled: list[dict[str, Any]] = Field(description="why it was dropped, rejected or held")
    sightings: list[dict[str, Any]]
    ingested: list[dict[str, Any]] = Field(
        default_factory=list, description="each copy ingested (mailbox, source id, folder, when)"
    )


class SourceCopy(BaseModel):
    mailbox: str
    source_id: str
    folder: str | None
    ingested_at: str | None
    blob: str | None = Field(description="the raw mail in Blob Storage")
    key: str | None = Field(description="its message key (null if its raw mail is gone)")
    message: MessageStatus | None = Field(
        description="its filing status; null while it is queued, not yet mapped (or poisoned)"
    )


class SourceCopies(BaseModel):
    messages: list[SourceCopy] = Field(description="one per mailbox that ingested the id")


MODELS: tuple[type[BaseModel], ...] = (
    Error,
    TimelineItem,
    Record,
    RecordWithTimeline,
    RecordPage,
    RecordPatch,
    FileByMessageId,
    FileBySource,
    Filed,
    Reply,
    ReplyQueued,
    MessageStatus,
    SourceCopy,
    SourceCopies,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel] | dict[str, Any], description: str) -> dict[str, Any]:
    schema = _ref(model) if isinstance(model, type) else model
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# The health report's stable part; its sections (storage, queues, mailboxes...) are described in
# the README ("Operations") and may grow.
HEALTH: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok", "degraded", "unhealthy"]}},
}
ERRORS = {
    "400": _json(Error, "bad request: query, path, JSON or body"),
    "404": _json(Error, "no such record type, record or message"),
    "500": _json(Error, "internal error (a bug or a storage outage, never the input)"),
}
# Every route that takes a body.
BODY_ERRORS = {
    "413": _json(Error, "the body is over 64 KiB, or a text over its limit"),
    "415": _json(Error, "the body is not sent as Content-Type: application/json"),
}
ETAG = {
    "ETag": {
        "description": "strong ETag of the record with its timeline (as GET answers it)",
        "required": True,
        "schema": {"type": "string", "pattern": '^"[0-9a-f]{32}"$'},
    }
}
TYPE = {
    "name": "type",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "CASE-12, 12, or the record key",
}
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "optional: the ETag of a GET; the update happens only if it still holds "
    '(412 otherwise). `*` matches any record; weak tags (W/"...") never match.',
}


MESSAGE_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "message key (hex) or Message-ID",
}
# An attachment goes as its own type only when a browser cannot run it (services/downloads.py).
ATTACHMENT_TYPES = ("application/octet-stream", "application/pdf", "image/png", "text/plain", "*/*")


def _download(types: tuple[str, ...], description: str) -> dict[str, Any]:
    """A file answered as a download, never rendered."""
    return {
        "description": f"{description}, as `Content-Disposition: attachment` (RFC 6266; a name "
        "in any script as `filename*`) with `X-Content-Type-Options: nosniff`",
        "headers": {
            "Content-Disposition": {"required": True, "schema": {"type": "string"}},
            "X-Content-Type-Options": {"required": True, "schema": {"const": "nosniff"}},
        },
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in types},
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema or {"type": "string"},
        "description": description,
    }


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in MODELS:
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mailfiler",
            "version": "1",
            "description": "Records filed from mail, their timelines, and filing by hand.",
        },
        "servers": [{"url": "/api"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"}
            },
        },
        "security": [{"functionKey": []}],
        "paths": {
            "/records": {
                "get": {
                    "summary": "List and search records, newest first",
                    "parameters": [
                        _query("type", "record type"),
                        _query("status", "status"),
                        _query("contact", "the address that opened the record"),
                        _query("mailbox", "the mailbox the record was opened from"),
                        _query("q", "text in the title"),
                        _query(
                            "limit",
                            "page size, 1-200",
                            {"type": "integer", "minimum": 1, "maximum": 200},
                        ),
                        _query("continuation", "token from the previous page"),
                    ],
                    "responses": {
                        "200": _json(RecordPage, "a page of records"),
                        **ERRORS,
                        "422": _json(Error, "a status no record type has (or not the type's)"),
                    },
                }
            },
            "/records/{type}/{id}": {
                "get": {
                    "summary": "A record with its timeline",
                    "parameters": [TYPE, ID],
                    "responses": {
                        "200": {**_json(RecordWithTimeline, "the record"), "headers": ETAG},
                        **ERRORS,
                    },
                },
                "patch": {
                    "summary": "Update fields and status",
                    "description": "A PATCH that changes nothing writes nothing: no audit row, "
                    "no event.",
                    "parameters": [TYPE, ID, IF_MATCH],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(RecordPatch)}},
                    },
                    "responses": {
                        "200": {**_json(Record, "the updated record"), "headers": ETAG},
                        "409": _json(Error, "changed meanwhile (no If-Match sent): read, retry"),
                        "412": _json(Error, "If-Match does not hold: the record changed"),
                        "422": _json(
                            Error, "a field or status the type refuses, or a value too large"
                        ),
                        **BODY_ERRORS,
                        **ERRORS,
                    },
                },
            },
            "/records/{type}/{id}/messages": {
                "post": {
                    "summary": "File a mail Mailfiler has seen onto this record",
                    "parameters": [TYPE, ID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref(FileByMessageId), _ref(FileBySource)]}
                            }
                        },
                    },
                    "responses": {
                        "202": _json(Filed, "queued for filing"),
                        "422": _json(Error, "a value Table Storage cannot hold"),
                        **BODY_ERRORS,
                        **ERRORS,
                    },
                }
            },
            "/records/{type}/{id}/reply": {
                "post": {
                    "summary": "Answer from the record, through its mailbox (queued, then sent)",
                    "parameters": [TYPE, ID],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(Reply)}},
                    },
                    "responses": {
                        "202": _json(ReplyQueued, "queued for sending"),
                        "422": _json(
                            Error,
                            "the reply cannot be sent as asked: subject, recipient, mailbox "
                            "(unknown, disabled or unable to send) or attachment; the message "
                            "says which and why",
                        ),
                        **BODY_ERRORS,
                        **ERRORS,
                    },
                }
            },
            "/records/{type}/{id}/messages/{key}/attachments/{index}": {
                "get": {
                    "summary": "Download an attachment of a mail on the record",
                    "parameters": [
                        TYPE,
                        ID,
                        {**MESSAGE_KEY, "description": "the timeline entry's message_key"},
                        {
                            "name": "index",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9]{1,3}$"},
                            "description": "the attachment's place in the entry's list, from 0",
                        },
                    ],
                    "responses": {"200": _download(ATTACHMENT_TYPES, "the attachment"), **ERRORS},
                }
            },
            "/health": {
                "get": {
                    "summary": "Health: storage, queue depths, each mailbox's status",
                    "responses": {
                        "200": {
                            "description": "ok, or degraded (a mailbox or queue needs a look)",
                            "content": {"application/json": {"schema": HEALTH}},
                        },
                        "503": {
                            "description": "unhealthy: storage unreachable or the app not loaded",
                            "content": {"application/json": {"schema": HEALTH}},
                        },
                    },
                }
            },
            "/messages/{key}/raw": {
                "get": {
                    "summary": "Download a message's raw mail (.eml)",
                    "parameters": [MESSAGE_KEY],
                    "responses": {"200": _download(("message/rfc822",), "the raw mail"), **ERRORS},
                }
            },
            "/messages": {
                "get": {
                    "summary": "Mail named by its mailbox's id for it (mail without a Message-ID)",
                    "parameters": [
                        {
                            **_query(
                                "source_id",
                                "the mail's id in its mailbox: file name, IMAP UID, Graph id",
                                {"type": "string", "minLength": 1, "maxLength": 4096},
                            ),
                            "required": True,
                        },
                        _query("mailbox", "only this mailbox (default: every mailbox)"),
                    ],
                    "responses": {
                        "200": _json(SourceCopies, "each mailbox's copy and its filing status"),
                        "400": _json(Error, "no source_id, or one over 4096 characters"),
                        "404": _json(
                            Error, "no such mailbox, or no mailbox ingested this source id"
                        ),
                        "500": ERRORS["500"],
                    },
                }
            },
            "/messages/{key}": {
                "get": {
                    "summary": "Where a message is filed, or why not",
                    "parameters": [
                        {
                            "name": "key",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                            "description": "message key (hex) or Message-ID",
                        }
                    ],
                    "responses": {"200": _json(MessageStatus, "its filing status"), **ERRORS},
                }
            },
        },
    }

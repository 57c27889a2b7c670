"""The OpenAPI 3.1 document of the HTTP API, its schemas generated from pydantic models."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

REF = "#/components/schemas/{model}"


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
    status: str | None = None
    fields: dict[str, str | int | None] | None = None


class FileByMessageId(BaseModel):
    message_id: str


class FileBySource(BaseModel):
    mailbox: str
    source_id: str


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
    status: str | None = Field(description="filed, dropped, rejected or held")
    filed: dict[str, Any] | None = Field(description="the record it is filed on, and why")
    also: list[dict[str, Any]] = Field(description="further records one mail opened")
    unfiled: list[dict[str, Any]] = Field(description="why it was dropped, rejected or held")
    sightings: list[dict[str, Any]]


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
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel] | dict[str, Any], description: str) -> dict[str, Any]:
    schema = _ref(model) if isinstance(model, type) else model
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(Error, "bad request"),
    "404": _json(Error, "no such record type, record or message"),
    "500": _json(Error, "internal error"),
}
TYPE = {"name": "type", "in": "path", "required": True, "schema": {"type": "string"}}
ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "CASE-12, 12, or the record key",
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
                    "summary": "List and search records",
                    "parameters": [
                        _query("type", "record type"),
                        _query("status", "status"),
                        _query("contact", "the address that opened the record"),
                        _query("q", "text in the title"),
                        _query(
                            "limit",
                            "page size, 1-200",
                            {"type": "integer", "minimum": 1, "maximum": 200},
                        ),
                        _query("continuation", "token from the previous page"),
                    ],
                    "responses": {"200": _json(RecordPage, "a page of records"), **ERRORS},
                }
            },
            "/records/{type}/{id}": {
                "get": {
                    "summary": "A record with its timeline",
                    "parameters": [TYPE, ID],
                    "responses": {"200": _json(RecordWithTimeline, "the record"), **ERRORS},
                },
                "patch": {
                    "summary": "Update fields and status",
                    "parameters": [TYPE, ID],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(RecordPatch)}},
                    },
                    "responses": {
                        "200": _json(Record, "the updated record"),
                        "409": _json(Error, "changed meanwhile"),
                        "422": _json(Error, "a field or status the type refuses"),
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
                    "responses": {"202": _json(Filed, "queued for filing"), **ERRORS},
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
                        "413": _json(Error, "the text is too long"),
                        **ERRORS,
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
                            "schema": {"type": "string"},
                            "description": "message key (hex) or Message-ID",
                        }
                    ],
                    "responses": {"200": _json(MessageStatus, "its filing status"), **ERRORS},
                }
            },
        },
    }

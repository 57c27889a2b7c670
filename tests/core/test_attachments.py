"""Attachments are checked before they are stored: size, and declared type against content."""

from __future__ import annotations

import base64

import pytest

from shared.core.attachments import MAX_ATTACHMENT_BYTES, check, sniff
from shared.core.mime import attachment_contents

from ..conftest import SAMPLES

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20


@pytest.mark.parametrize(
    ("declared", "data", "stored_as", "noted"),
    [
        ("image/png", PNG, "image/png", False),
        ("application/pdf", b"%PDF-1.4 ...", "application/pdf", False),
        ("application/pdf", b"MZ\x90\x00 this is an exe", "application/octet-stream", True),
        ("image/png", b"not a png at all", "application/octet-stream", True),
        ("image/jpeg", PNG, "application/octet-stream", True),
        ("text/html", b"<script>alert(1)</script>", "application/octet-stream", False),
        ("image/svg+xml", b"<svg onload=x>", "application/octet-stream", False),
        (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            b"PK\x03\x04docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            False,
        ),
        ("text/plain", b"#!/bin/sh\nrm -rf /", "application/octet-stream", True),
        ("text/csv", b"a,b\n1,2\n", "text/csv", False),
    ],
)
def test_declared_type_against_content(
    declared: str, data: bytes, stored_as: str, noted: bool
) -> None:
    verdict = check(declared, data)
    assert verdict.store
    assert verdict.content_type == stored_as
    assert (verdict.note is not None) == noted


def test_oversized_attachment_is_not_stored_and_says_why() -> None:
    verdict = check("application/zip", b"PK\x03\x04" + b"\x00" * MAX_ATTACHMENT_BYTES)
    assert not verdict.store
    assert verdict.note is not None and "byte limit" in verdict.note
    assert sniff(b"") is None


def test_attachment_contents_of_the_sample_mail() -> None:
    invoice = attachment_contents((SAMPLES / "mail" / "04-invoice-wrong.eml").read_bytes())
    assert [(a.filename, a.content_type, a.size) for a, _ in invoice] == [
        ("invoice-2291.pdf", "application/pdf", 78)
    ]
    assert invoice[0][1].startswith(b"%PDF-1.4") and len(invoice[0][1]) == 78
    locked = attachment_contents((SAMPLES / "mail" / "06-access-locked.eml").read_bytes())
    (meta, data) = locked[0]
    assert meta.filename == "Bildschirmfoto gesperrt.png"
    assert data == base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    assert attachment_contents(b"\xff\x00 garbage") == []

"""Mail as hostile content: an HTML body sanitised with nh3 (an allow-list), in a document of
its own whose Content-Security-Policy forbids script, forms, frames and every remote load; the
console shows it in an <iframe sandbox> without allow-scripts, allow-forms or
allow-same-origin. Remote images load only when the reader asks, per mail (`remote_images`).
Images the mail carries itself (`<img src="cid:...">`, RFC 2392) are shown from its own parts,
written into the document as data: URLs: no request, whatever the reader chose.

nh3 is imported on the first call (never by app indexing: see tests/test_cold_start.py).
"""

from __future__ import annotations

import base64
import html
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from ..core.mime import iter_attachments

# CSS properties a mail may keep in style="": none can load anything (no url(), no
# background-image, no @import: those are not properties).
STYLE_PROPERTIES = frozenset(
    {
        "background-color",
        "border",
        "border-bottom",
        "border-collapse",
        "border-color",
        "border-left",
        "border-right",
        "border-spacing",
        "border-style",
        "border-top",
        "border-width",
        "color",
        "direction",
        "display",
        "font",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "height",
        "line-height",
        "margin",
        "margin-bottom",
        "margin-left",
        "margin-right",
        "margin-top",
        "max-width",
        "padding",
        "padding-bottom",
        "padding-left",
        "padding-right",
        "padding-top",
        "text-align",
        "text-decoration",
        "text-indent",
        "vertical-align",
        "white-space",
        "width",
    }
)
_DATA_IMAGE = re.compile(r"data:image/(png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]*\Z", re.I)
_REMOTE = re.compile(r"https?://", re.I)
_LINK = re.compile(r"(https?://|mailto:)", re.I)

# The mail's own images shown inline: types a browser only ever draws (no SVG), and sizes that
# keep the frame's document small.
INLINE_TYPES = frozenset({"image/png", "image/gif", "image/jpeg", "image/webp"})
MAX_INLINE_IMAGE = 2 * 1024 * 1024
MAX_INLINE_TOTAL = 8 * 1024 * 1024

_lock = threading.Lock()
_nh3: Any = None


def _cleaner() -> Any:
    """nh3, imported once, on one thread (concurrent first imports can deadlock)."""
    global _nh3
    with _lock:
        if _nh3 is None:
            import nh3

            _nh3 = nh3
    return _nh3


def policy(remote_images: bool) -> str:
    """The mail document's Content-Security-Policy."""
    images = "data: http: https:" if remote_images else "data:"
    return (
        f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    )


def inline_images(raw: bytes) -> dict[str, str]:
    """The mail's own images by Content-ID (without <>): data: URLs of the image parts that
    have one, within the size limits; the rest are left out (the reader sees their alt text)."""
    found: dict[str, str] = {}
    total = 0
    for meta, content in iter_attachments(raw):
        if not meta.content_id or meta.content_type not in INLINE_TYPES:
            continue
        if meta.size > MAX_INLINE_IMAGE or total + meta.size > MAX_INLINE_TOTAL:
            continue
        data = b"".join(content())
        total += len(data)
        encoded = base64.b64encode(data).decode("ascii")
        found.setdefault(meta.content_id, f"data:{meta.content_type};base64,{encoded}")
    return found


def _cid(value: str, inline: Mapping[str, str]) -> str | None:
    """A cid: URL's image among the mail's own (its id URL-encoded, RFC 2392), or None."""
    wanted = unquote(value[4:]).strip().strip("<>")
    if wanted in inline:
        return inline[wanted]
    folded = wanted.casefold()
    return next((uri for cid, uri in inline.items() if cid.casefold() == folded), None)


def sanitise(markup: str, remote_images: bool, inline: Mapping[str, str] | None = None) -> str:
    """The mail's HTML with only harmless tags and attributes left; links only to http(s) and
    mailto, images only inline (data:, or cid: naming one of the mail's own image parts in
    `inline`) or, when asked for, remote."""
    nh3 = _cleaner()
    own = inline or {}

    def keep(element: str, attribute: str, value: str) -> str | None:
        if element == "img" and attribute == "src" and value[:4].lower() == "cid:":
            return _cid(value, own)
        if attribute == "src":
            inline = element == "img" and _DATA_IMAGE.match(value)
            if inline or (element == "img" and remote_images and _REMOTE.match(value)):
                return value
            return None
        if attribute == "href":
            return value if _LINK.match(value) else None
        return value

    tags = set(nh3.ALLOWED_TAGS) - {"area", "map"}
    attributes = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()}
    attributes.setdefault("*", set()).update({"style", "dir", "lang", "title"})
    attributes.setdefault("img", set()).update({"src", "alt", "width", "height"})
    for tag in ("table", "td", "th", "tr", "tbody", "thead"):
        attributes.setdefault(tag, set()).update({"align", "valign", "width", "bgcolor"})
    cleaned: str = nh3.clean(
        markup,
        tags=tags,
        attributes=attributes,
        generic_attribute_prefixes=set(),
        attribute_filter=keep,
        # cid: only reaches `keep`, which turns it into the part's data: URL or drops it.
        url_schemes={"http", "https", "mailto", "data", "cid"},
        link_rel="noopener noreferrer",
        strip_comments=True,
        filter_style_properties=set(STYLE_PROPERTIES),
        clean_content_tags={"script", "style", "title", "svg", "math", "template"},
    )
    return cleaned


def has_remote_images(markup: str) -> bool:
    """Would the reader's click on "show remote images" load anything?"""
    return bool(re.search(r"<img[^>]+src\s*=\s*[\"']?\s*https?://", markup, re.I))


def document(
    plain: str | None,
    markup: str | None,
    remote_images: bool,
    inline: Mapping[str, str] | None = None,
) -> str:
    """The frame's whole document: the sanitised HTML body, else the text in <pre>."""
    if markup is not None and markup.strip():
        body = sanitise(markup, remote_images, inline)
    else:
        body = f"<pre>{html.escape(plain or '')}</pre>"
    csp = html.escape(policy(remote_images))
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="referrer" content="no-referrer">'
        "<style>body{font-family:system-ui,sans-serif;margin:.5rem;overflow-wrap:anywhere}"
        "pre{white-space:pre-wrap}img{max-width:100%}</style>"
        f"</head><body>{body}</body></html>"
    )

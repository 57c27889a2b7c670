"""Mail as hostile content: an HTML body sanitised with nh3 (an allow-list), in a document of
its own whose Content-Security-Policy forbids script, forms, frames and every remote load; the
console shows it in an <iframe sandbox> without allow-scripts, allow-forms or
allow-same-origin. Remote images load only when the reader asks, per mail (`remote_images`).

nh3 is imported on the first call (never by app indexing: see tests/test_cold_start.py).
"""

from __future__ import annotations

import html
import re
import threading
from typing import Any

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


def sanitise(markup: str, remote_images: bool) -> str:
    """The mail's HTML with only harmless tags and attributes left; links only to http(s) and
    mailto, images only inline (data:) or, when asked for, remote."""
    nh3 = _cleaner()

    def keep(element: str, attribute: str, value: str) -> str | None:
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
        url_schemes={"http", "https", "mailto", "data"},
        link_rel="noopener noreferrer",
        strip_comments=True,
        filter_style_properties=set(STYLE_PROPERTIES),
        clean_content_tags={"script", "style", "title", "svg", "math", "template"},
    )
    return cleaned


def has_remote_images(markup: str) -> bool:
    """Would the reader's click on "show remote images" load anything?"""
    return bool(re.search(r"<img[^>]+src\s*=\s*[\"']?\s*https?://", markup, re.I))


def document(plain: str | None, markup: str | None, remote_images: bool) -> str:
    """The frame's whole document: the sanitised HTML body, else the text in <pre>."""
    if markup is not None and markup.strip():
        body = sanitise(markup, remote_images)
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

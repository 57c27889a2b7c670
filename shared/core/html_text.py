"""HTML mail bodies as plain text, for mail that has no text/plain part.

`html2text` does the real work (it keeps paragraphs, lists and ``>`` quotes, which the reply
stripper needs). It is pure Python and has choked on odd markup before, so every failure, and
any very large document, falls back to a small `html.parser` converter, then to a regex.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser

import html2text

# html2text and html.parser are linear but slow (about 1.5 s and 0.6 s per MB); bigger
# documents go to the next, cruder converter so a 10 MB newsletter cannot stall the map stage.
MAX_HTML2TEXT_CHARS = 500_000
MAX_STDLIB_CHARS = 2_000_000

_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "br",
        "div",
        "dl",
        "dt",
        "dd",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    }
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})
_TAG_RE = re.compile(r"<[^<>]*>")  # [^<>]: stay linear on "<<<<..."
# A "<" that reaches no ">" before the next "<": truncated or garbage markup. html.parser
# rescans from each such "<" to the end of the document, which is quadratic.
_UNTERMINATED_RE = re.compile(r"<(?![^<>]*>)")
_SKIP_OPEN_RE = re.compile(r"<(script|style|head)\b", re.IGNORECASE)
_BLOCK_RE = re.compile(r"</?(?:" + "|".join(_BLOCK_TAGS) + r")\b[^<>]*>", re.IGNORECASE)
_SPACES_RE = re.compile(r"[ \t\f\v]+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_TRAILING_SPACE_RE = re.compile(r"[ \t]+\n")


class _PlainHTML2Text(html2text.HTML2Text):
    """html2text without Markdown escaping: mail text is read by people, not renderers."""

    def handle_data(self, data: str, entity_char: bool = False) -> None:  # noqa: ARG002
        # entity_char=True is the only switch html2text offers to skip `escape_md_section`.
        super().handle_data(data, entity_char=True)

    def handle_tag(self, tag: str, attrs: dict[str, str | None], start: bool) -> None:
        super().handle_tag(tag, attrs, start)
        if not start and tag in ("td", "th"):
            self.o(" ")  # ignore_tables glues cells together ("c1c2") otherwise


class _StripParser(HTMLParser):
    """Text nodes in order, with line breaks at block boundaries; scripts and styles dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(" ".join(data.split()) if data.strip() else " ")


def _defuse(markup: str) -> str:
    """Escape the constructs that make html.parser quadratic: unterminated tags, comments and
    marked sections (each would be rescanned to the end of the document)."""
    markup = _UNTERMINATED_RE.sub("&lt;", markup)
    for opener, closer in (("<!--", "-->"), ("<![", "]>")):  # "<![if ...]>" ends at "]>"
        last = markup.rfind(closer)
        start = markup.find(opener, last + len(closer) if last >= 0 else 0)
        if start >= 0:
            markup = markup[:start] + markup[start:].replace(opener, "&lt;" + opener[1:])
    return markup


def _with_html2text(markup: str) -> str:
    converter = _PlainHTML2Text()
    converter.ignore_links = True
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    converter.unicode_snob = True
    converter.body_width = 0
    return str(converter.handle(markup))


def _with_stdlib(markup: str) -> str:
    parser = _StripParser()
    parser.feed(markup)
    parser.close()
    return "".join(parser.chunks)


def _drop_skipped(markup: str) -> str:
    """`markup` without script/style/head elements, in one linear pass (no regex backtracking)."""
    lower = markup.lower()
    kept: list[str] = []
    pos = 0
    while (match := _SKIP_OPEN_RE.search(markup, pos)) is not None:
        kept.append(markup[pos : match.start()])
        close = lower.find(f"</{match.group(1).lower()}", match.end())
        if close < 0:
            return "".join(kept)  # unclosed: the rest is script or style
        pos = close
        end = lower.find(">", close)
        pos = len(markup) if end < 0 else end + 1
    kept.append(markup[pos:])
    return "".join(kept)


def _with_regex(markup: str) -> str:
    text = _BLOCK_RE.sub("\n", _drop_skipped(markup))
    text = html.unescape(_TAG_RE.sub("", text))
    return _SPACES_RE.sub(" ", text)


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    text = _TRAILING_SPACE_RE.sub("\n", text)
    return _BLANK_LINES_RE.sub("\n\n", text).strip()


def html_to_text(markup: str, defects: list[str] | None = None) -> str:
    """Readable plain text of an HTML document; never raises.

    When a converter fails, a short note naming it is appended to `defects` (if given).
    """
    converters: list[tuple[str, Callable[[str], str]]] = [("regex", _with_regex)]
    if len(markup) <= MAX_STDLIB_CHARS:
        converters.insert(0, ("stdlib", _with_stdlib))
    if len(markup) <= MAX_HTML2TEXT_CHARS:
        converters.insert(0, ("html2text", _with_html2text))
    elif defects is not None:
        defects.append("html-too-large-for-html2text")
    try:
        markup = _defuse(markup)
    except Exception:  # pragma: no cover - str methods and a linear regex; belt and braces
        if defects is not None:
            defects.append("html-defuse-failed")
    for name, convert in converters:
        try:
            return _tidy(convert(markup))
        except Exception as exc:  # any converter bug means "try the next, simpler one"
            if defects is not None:
                defects.append(f"html-{name}-failed:{type(exc).__name__}")
    return ""  # pragma: no cover - the regex converter cannot fail on a str

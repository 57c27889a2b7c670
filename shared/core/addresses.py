"""Address lists as RFC 5322 (with its obsolete forms) and RFC 6532 write them.

The sender decides contacts, policy and threads, so which text becomes an address is routing
correctness. The stdlib was measured first and is not enough on its own: `getaddresses` folds
comments into display names (``Pete (A nice ) chap his account his host)``) and changed its
results between patch releases (strict mode, 3.11.10 / 3.12.6), and `headerregistry`'s parser
reads ``boss@bank.example <attacker@evil.example>`` as the address boss@bank.example and drops
the real one. This module follows the RFC's grammar and is strict about what becomes an address:

* a mailbox with an angle-addr has the address inside the brackets, never its display name,
  however much that looks like an address; an invalid bracketed address gives no address;
* an address has exactly one ``@``, a non-empty local part and domain, and no whitespace,
  control or format characters and no specials once comments, quoting and the obsolete spaces
  around ``.`` and ``@`` are gone; anything else gives no address (and a defect), never a guess;
* groups (``A Group: a@x, b@y;``, ``Undisclosed recipients:;``) give their members, routes
  (``<@node.test:mary@example.net>``) are dropped, comments are dropped, and the first comment
  names a bare addr-spec that has no display name (``jdoe@example.org (John Doe)``);
* ``;`` between addresses outside a group separates them, as Outlook users type them;
* UTF-8 (RFC 6532) is kept whole: ``用户@例子.广告``.

Encoded words (RFC 2047) are left in the names for the caller to decode, so an encoded comma
cannot split an address. Linear in the length of the value; pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

# One lexical token: (kind, text). Kinds: "sp", "atom", "qs" (text: the unescaped content),
# "comment" (text: the unescaped content), "literal" (text: "[...]"), or the special itself.
Token = tuple[str, str]

_LEX = re.compile(
    r"(?P<sp>\s+)"
    r"|(?P<atom>[^\s\"(),.:;<>@\[\]]+)"
    r"|\"(?P<qs>(?:[^\"\\]+|\\.)*)(?P<qend>\")?"
    r"|(?P<literal>\[(?:[^\]\\]+|\\.)*\]?)"
    r"|(?P<special>[,.:;<>@)\]])",
    re.S,
)
_ESCAPE = re.compile(r"\\(.)", re.S)
_WORDS = frozenset({"atom", "qs"})
_PHRASE = frozenset({"atom", "qs", "sp", "comment", "."})
# Longer address headers are read to this length: 1,000 addresses of a usual length fit, and
# a hostile megabyte costs a bounded parse.
MAX_VALUE_CHARS = 256 * 1024
# Characters no unquoted local part or domain may hold (RFC 5322 specials, backslash, quote).
# What no unquoted local part may hold (RFC 5322 specials but '.', backslash, quote, any
# whitespace); a domain label may hold no '.' either, and a domain literal no brackets.
_NOT_LOCAL = re.compile(r'[()<>\[\]:;@\\,"\s]')
_NOT_LABEL = re.compile(r'[()<>\[\]:;@\\,."\s]')
_NOT_LITERAL = re.compile(r"[\[\]\\\s]")


@dataclass(frozen=True, slots=True)
class ParsedAddress:
    """One mailbox: `name` is the display name with quotes and comments resolved and encoded
    words still encoded; `local` and `domain` are exactly as written (case kept)."""

    name: str
    local: str
    domain: str


def parse_address_list(value: str, limit: int) -> tuple[tuple[ParsedAddress, ...], tuple[str, ...]]:
    """The mailboxes of one address-list header value, in order, at most `limit`; and defects
    (``address-invalid``, ``address-unterminated``, ``too-many-addresses``,
    ``address-header-truncated``)."""
    found: list[ParsedAddress] = []
    defects: dict[str, None] = {}
    if len(value) > MAX_VALUE_CHARS:
        # Cut at an entry's end: an address cut short would be another address.
        defects["address-header-truncated"] = None
        value = value[: value.rfind(",", 0, MAX_VALUE_CHARS) + 1]
    entry: list[Token] = []
    # Whether `entry` so far can be a group's display name: a phrase (obsolete dots allowed).
    has_word, phrase_only = False, True
    in_angle = in_group = False

    def flush() -> None:
        nonlocal has_word, phrase_only
        if any(kind not in ("sp", "comment") for kind, _ in entry):
            found.extend(_mailboxes(entry, defects))
        entry.clear()
        has_word, phrase_only = False, True

    for kind, text in _tokens(value, defects):
        if in_angle:  # a route's ',' and ':' belong to the address
            entry.append((kind, text))
            in_angle = kind != ">"
        elif kind == ",":
            flush()
        elif kind == ";":
            flush()
            in_group = False
        elif kind == ":" and not in_group and has_word and phrase_only:
            entry.clear()  # the group's display name names no mailbox
            has_word, phrase_only = False, True
            in_group = True
        else:
            entry.append((kind, text))
            in_angle = kind == "<"
            has_word = has_word or kind in _WORDS
            phrase_only = phrase_only and kind in _PHRASE
        if len(found) > limit:
            break
    else:
        flush()
    if len(found) > limit:
        defects.setdefault("too-many-addresses", None)
    return tuple(found[:limit]), tuple(defects)


def _tokens(value: str, defects: dict[str, None]) -> Iterator[Token]:
    pos, end = 0, len(value)
    while pos < end:
        if value[pos] == "(":
            pos, text = _comment(value, pos, defects)
            yield "comment", text
            continue
        match = _LEX.match(value, pos)
        if match is None:  # a lone backslash before the end: the lexer's only gap
            yield "atom", value[pos]
            pos += 1
            continue
        pos = match.end()
        group = match.lastgroup
        if group == "qend" or match.group("qs") is not None:
            if match.group("qend") is None:
                defects.setdefault("address-unterminated", None)
            yield "qs", _ESCAPE.sub(r"\1", match.group("qs"))
        elif group == "literal":
            text = match.group("literal")
            if not text.endswith("]") or text.endswith("\\]"):
                defects.setdefault("address-unterminated", None)
            yield "literal", text
        elif group == "special":
            yield match.group("special"), match.group("special")
        else:
            yield str(group), match.group(0)


def _comment(value: str, pos: int, defects: dict[str, None]) -> tuple[int, str]:
    """A comment starting at `pos` (nested ones included): the position after it, its text."""
    depth, out, i = 0, [], pos
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
            continue
        if ch == "(":
            depth += 1
            if depth > 1:
                out.append(ch)
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1, "".join(out)
            out.append(ch)
        else:
            out.append(ch)
        i += 1
    defects.setdefault("address-unterminated", None)
    return i, "".join(out)


def _mailboxes(entry: list[Token], defects: dict[str, None]) -> list[ParsedAddress]:
    """The mailboxes of one list entry: ``name <spec>`` (a missing comma between two of them
    is forgiven) or a bare ``spec``. One pass: each token is looked at a bounded number of
    times, however many brackets a hostile entry holds."""
    out: list[ParsedAddress] = []
    before: list[Token] = []
    i, angled, n = 0, False, len(entry)
    while i < n:
        if entry[i][0] != "<":
            before.append(entry[i])
            i += 1
            continue
        close = i + 1
        while close < n and entry[close][0] != ">":
            close += 1
        if close == n:
            defects.setdefault("address-unterminated", None)
        inner = entry[i + 1 : close]
        # Comments after the brackets (up to the next mailbox) may name it: `<a@b> (Ann)`.
        stop = close + 1
        while stop < n and entry[stop][0] in ("sp", "comment"):
            stop += 1
        trailing = entry[close + 1 : stop]
        spec = _route_free(inner)
        name = _phrase(before) or _first_comment(before + inner + trailing)
        address = _addr_spec(spec, name) if spec is not None else None
        if address is None:
            defects.setdefault("address-invalid", None)
        else:
            out.append(address)
        before, angled, i = [], True, close + 1
    if angled:
        if any(kind in _WORDS for kind, _ in before):
            defects.setdefault("address-invalid", None)  # words after the brackets: no guess
        return out
    address = _addr_spec(before, _first_comment(before))
    if address is None:
        defects.setdefault("address-invalid", None)
        return []
    return [address]


def _route_free(spec: list[Token]) -> list[Token] | None:
    """The addr-spec of an angle-addr without its obsolete route (``@a,@b:``); None when what
    comes before a ':' is not a route."""
    colons = [i for i, (kind, _) in enumerate(spec) if kind == ":"]
    if not colons:
        return spec
    route = [t for t in spec[: colons[-1]] if t[0] not in ("sp", "comment", ",")]
    if not route or route[0][0] != "@":
        return None
    return spec[colons[-1] + 1 :]


def _phrase(tokens: list[Token]) -> str:
    """A display name: words joined as written, one space where whitespace or comments were."""
    parts: list[str] = []
    for kind, text in tokens:
        parts.append(" " if kind in ("sp", "comment") else text)
    return " ".join("".join(parts).split())


def _first_comment(tokens: list[Token]) -> str:
    return next((" ".join(t.split()) for k, t in tokens if k == "comment" and t.strip()), "")


def _addr_spec(tokens: list[Token], name: str) -> ParsedAddress | None:
    """An addr-spec from its tokens, or None when they are not exactly one valid address.

    Comments go, and whitespace may stand only next to '.' and '@' (the obsolete forms): two
    words side by side (``John Smith``, ``a@b.example c@d.example``) are not an address.
    """
    kept = [(k, t) for k, t in tokens if k != "comment"]
    pieces: list[str] = []
    last = ""
    for kind, text in kept:
        if kind == "sp":
            continue
        if kind in _WORDS or kind == "literal":
            if last in ("word", "literal"):
                return None
            if kind == "qs" and (not text or _NOT_LOCAL.search(text)):
                return None  # a quoted local part that cannot be written unquoted: refused
            pieces.append(text)
            last = "literal" if kind == "literal" else "word"
        elif kind in (".", "@"):
            pieces.append(kind)
            last = kind
        else:
            return None
    local, at, domain = "".join(pieces).partition("@")
    if not at or not _valid_local(local) or not _valid_domain(domain):
        return None
    return ParsedAddress(name=name, local=local, domain=domain.removesuffix("."))


def _valid_local(local: str) -> bool:
    # isprintable: no control or format characters (bidi overrides, zero-width ones).
    return bool(local) and local.isprintable() and not _NOT_LOCAL.search(local)


def _valid_domain(domain: str) -> bool:
    if domain.startswith("["):
        inner = domain[1:-1]
        return (
            domain.endswith("]")
            and bool(inner)
            and inner.isprintable()
            and not _NOT_LITERAL.search(inner)
        )
    labels = domain.removesuffix(".").split(".")
    return all(label and label.isprintable() and not _NOT_LABEL.search(label) for label in labels)

"""Authentication-Results (RFC 8601): may the mailbox's own server vouch for a From address?

Pure. Anyone can write an Authentication-Results header, so one counts only when it carries an
authserv-id configured for the mailbox (`authserv_id:`), and only the topmost such header: a
receiving server prepends its own (and must remove forged ones with its id, RFC 8601 section
5), so one further down is an earlier hop's or a sender's. A vouching result is `dmarc=pass`
for the From domain, `dkim=pass` signed by it (header.d / header.i), or `spf=pass` for an
envelope sender of it (smtp.mailfrom).

A small parser rather than a dependency: the `authres` package last released in 2019. It takes
comments (nested, with escapes) and quoted strings, never raises, and reads at most
`MAX_HEADER` characters of a header.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_HEADER = 8192  # characters of one header read; real ones are a few hundred
MAX_RESULTS = 64  # results read from one header


@dataclass(frozen=True)
class MethodResult:
    method: str  # lower-case, without a version: "dkim"
    result: str  # lower-case: "pass"
    props: dict[str, str] = field(default_factory=dict)  # "header.d" -> "example.com"


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str
    results: tuple[MethodResult, ...]


def _tokens(text: str) -> list[tuple[str, str]]:
    """("w", word), ("q", quoted string), (";", ""), ("=", ""); comments and space dropped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "(":  # a comment, nested, with quoted-pairs
            depth = 0
            while i < n:
                ch = text[i]
                if ch == "\\":
                    i += 2
                    continue
                depth += {"(": 1, ")": -1}.get(ch, 0)
                i += 1
                if depth == 0:
                    break
        elif ch == '"':
            i += 1
            chars: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(text[i])
                i += 1
            i += 1  # the closing quote (or the end of an unterminated string)
            out.append(("q", "".join(chars)))
        elif ch in ";=":
            out.append((ch, ""))
            i += 1
        else:
            start = i
            while i < n and not (text[i].isspace() or text[i] in ';="('):
                i += 1
            out.append(("w", text[start:i]))
    return out


def parse(value: str) -> AuthResults | None:
    """One Authentication-Results header's value, or None when it names no authserv-id."""
    tokens = _tokens(value[:MAX_HEADER])
    if not tokens or tokens[0][0] not in ("w", "q"):
        return None  # e.g. Exchange Online's "spf=pass ..." without an authserv-id
    if len(tokens) > 1 and tokens[1][0] == "=":
        return None
    authserv_id = tokens[0][1]
    segments: list[list[tuple[str, str]]] = [[]]
    for token in tokens[1:]:
        if token[0] == ";":
            segments.append([])
        else:
            segments[-1].append(token)
    results: list[MethodResult] = []
    for segment in segments[1 : MAX_RESULTS + 1]:
        pairs: list[tuple[str, str]] = []
        j = 0
        while j + 2 < len(segment):
            key, eq, val = segment[j : j + 3]
            if key[0] == "w" and eq[0] == "=" and val[0] in ("w", "q"):
                pairs.append((key[1].lower(), val[1]))
                j += 3
            else:
                j += 1  # a word without "=": a version number, "none", or noise
        if not pairs:
            continue  # "none", or nothing readable
        method, result = pairs[0]
        results.append(
            MethodResult(
                method=method.split("/", 1)[0].strip(),
                result=result.lower(),
                props={k: v for k, v in pairs[1:]},
            )
        )
    return AuthResults(authserv_id=authserv_id, results=tuple(results))


def trusted(headers: Iterable[str], authserv_ids: Iterable[str]) -> AuthResults | None:
    """The topmost header carrying one of the mailbox server's authserv-ids, parsed."""
    wanted = {a.lower() for a in authserv_ids}
    if not wanted:
        return None
    for value in headers:
        parsed = parse(value)
        if parsed is not None and parsed.authserv_id.lower() in wanted:
            return parsed
    return None


def _domain_of(value: str) -> str:
    return value.rpartition("@")[2].strip().strip(".").lower()


def vouches(results: AuthResults, domain: str) -> str | None:
    """The result that vouches for mail From `domain`, as text for the reasons, or None."""
    domain = domain.lower()
    for r in results.results:
        if r.result != "pass":
            continue
        props = r.props
        if r.method == "dmarc" and _domain_of(props.get("header.from", domain)) == domain:
            return f"dmarc=pass header.from={domain}"
        if r.method == "dkim":
            signer = props.get("header.d") or props.get("header.i") or ""
            if signer and _domain_of(signer) == domain:
                return f"dkim=pass header.d={domain}"
        if r.method == "spf":
            mailfrom = props.get("smtp.mailfrom") or ""
            if mailfrom and _domain_of(mailfrom) == domain:
                return f"spf=pass smtp.mailfrom={domain}"
    return None

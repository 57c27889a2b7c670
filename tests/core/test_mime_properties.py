"""Property tests: parse_message never raises, whatever bytes it gets.

Three sources of input: arbitrary bytes; real corpus mail damaged in the ways transport and
storage damage mail (truncation, flipped/inserted/deleted bytes, duplicated headers, a lost
header/body separator, NULs and lone CRs); and header blocks assembled from the characters
that break header parsers. Runs are derandomized so CI sees the same examples every time.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core.message import MailMessage
from shared.core.mime import parse_message

CORPORA = Path(Path(__file__).resolve().parents[1] / "data" / "corpora")
SEEDS = [p.read_bytes() for p in sorted(CORPORA.rglob("*.eml"))]

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(raw: bytes) -> MailMessage:
    """The invariants every parse must keep."""
    msg = parse_message(raw, mailbox="fuzz", source_id="f")
    assert msg.raw == raw
    assert msg.size == len(raw)
    assert msg.key
    assert msg.date is None or msg.date.tzinfo is not None
    texts = [msg.subject, msg.normalized_subject, msg.text, *msg.defects]
    texts += [v for pair in msg.headers for v in pair]
    texts += [a.filename or "" for a in msg.attachments]
    for addr in (msg.from_, msg.sender, *msg.to, *msg.cc, *msg.reply_to):
        if addr is not None:
            texts += [addr.email, addr.name]
    for text in texts:
        text.encode("utf-8")  # no lone surrogates may leak out
    assert all(a.size >= 0 for a in msg.attachments)
    # The fallback above satisfies everything else even when parsing crashed: a crash of our
    # own code (not damaged input, which is a plain defect) must show here.
    assert not [d for d in msg.defects if d.startswith("parser-failed")], msg.defects
    return msg


@settings(FUZZ, max_examples=1500)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check(raw)


@settings(FUZZ, max_examples=300)
@given(
    st.binary(min_size=1, max_size=512).map(
        lambda b: b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n' + b + b"\r\n--x--"
    )
)
def test_arbitrary_bytes_inside_a_multipart_never_raise(raw: bytes) -> None:
    check(raw)


def _split_head(raw: bytes) -> tuple[bytes, bytes, bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, body = raw.partition(sep)
        if found:
            return head, sep, body
    return raw, b"", b""


@st.composite
def damaged_mail(draw: st.DrawFn) -> bytes:
    raw = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(
            st.sampled_from(
                ["truncate", "flip", "insert", "delete", "dup-headers", "no-blank", "nul-cr"]
            )
        )
        at = draw(st.integers(0, len(raw)))
        if kind == "truncate":
            raw = raw[:at]
        elif kind == "flip" and raw:
            at = min(at, len(raw) - 1)
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
        elif kind == "insert":
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=64)) + raw[at:]
        elif kind == "delete":
            raw = raw[:at] + raw[at + draw(st.integers(1, 256)) :]
        elif kind == "dup-headers":
            head, sep, body = _split_head(raw)
            lines = head.splitlines(keepends=True)
            if lines:
                picked = draw(st.lists(st.sampled_from(lines), min_size=1, max_size=10))
                raw = head + b"".join(picked) + sep + body
        elif kind == "no-blank":
            head, sep, body = _split_head(raw)
            raw = head + sep[: len(sep) // 2] + body
        else:
            junk = draw(st.sampled_from([b"\x00", b"\r", b"\x00\r", b"\r\x00\x00"]))
            raw = raw[:at] + junk + raw[at:]
    return raw


def test_corpus_seeds_are_there() -> None:
    # The corpora live in the repo: missing ones fail the run, never skip it.
    assert len(SEEDS) >= 300, f"corpora missing under {CORPORA}"


@settings(FUZZ, max_examples=1500)
@given(damaged_mail())
def test_damaged_corpus_mail_never_raises(raw: bytes) -> None:
    check(raw)


# Tokens, not characters, so encoded words and RFC 2231 stars appear whole.
TOKENS = [*"<>[]()@:;,\"\\=?*'%_ \t\r\n\x00", "=?utf-8?q?", "=?x?b?", "?=", "name*", "é", "\udcff"]
TRICKY = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
SHORT = st.lists(st.sampled_from(TOKENS), max_size=5).map("".join)
HEADER_NAMES = st.sampled_from(
    [
        "Message-ID",
        "In-Reply-To",
        "References",
        "From",
        "Sender",
        "To",
        "Cc",
        "Reply-To",
        "Date",
        "Subject",
        "Content-Type",
        "Content-Disposition",
        "Content-Transfer-Encoding",
        "Content-ID",
    ]
)


@st.composite
def tricky_mail(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.tuples(HEADER_NAMES, TRICKY), max_size=8))
    part = draw(st.lists(st.tuples(HEADER_NAMES, TRICKY), max_size=4))
    head = "".join(f"{n}: {v}\r\n" for n, v in headers)
    sub = "".join(f"{n}: {v}\r\n" for n, v in part)
    params = draw(st.lists(st.tuples(st.sampled_from(["name", "filename", "charset"]), SHORT)))
    sub += "Content-Type: application/pdf" + "".join(f"; {k}{v}" for k, v in params) + "\r\n"
    text = (
        f'{head}Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\n{sub}\r\nbody\r\n--b--\r\n"
    )
    return text.encode("utf-8", "surrogateescape")


@settings(FUZZ, max_examples=1500)
@given(tricky_mail())
def test_tricky_headers_never_raise(raw: bytes) -> None:
    check(raw)

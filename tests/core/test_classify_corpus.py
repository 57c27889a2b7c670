"""The classifier measured on real-world mail: the bounce and reply corpora in tests/data.

Expected classes come from tests/data/corpora/bounces/README.md: in ``bounces/sisimai`` the
file name says it (``rfc3834-*`` auto-reply, ``arf-*`` feedback, ``is-not-bounce-*`` human,
the rest bounce); every ``bounces/flanker`` file is a bounce; the other ``bounces/<source>/``
folders name each file's class in their ``expected.csv``; every reply in ``replies/`` is a
person's (the crisp ``.txt`` bodies get a minimal header block). The corpora live in the
repo: a missing one fails the run (it is never skipped). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from shared.core.classify import Classification, classify
from shared.core.mime import parse_message

CORPORA = Path(Path(__file__).resolve().parents[1] / "data" / "corpora")
BOUNCES = sorted((CORPORA / "bounces").rglob("*.eml"))
REPLIES = sorted(
    p for p in (CORPORA / "replies").rglob("*") if p.is_file() and p.suffix in {".eml", ".txt"}
)
# Every source the README names; each must be there with its licence and at least one mail.
SOURCES = ("bounces/sisimai", "bounces/flanker", "bounces/flanker-extra", "bounces/bounceparser")

# Floors: a little under what was measured when the rules were written (see the report
# printed with -s), so a regression fails but a harmless shuffle does not.
MIN_MACHINE_NOT_HUMAN = 0.98
MIN_EXACT_CLASS = 0.95
MAX_HUMAN_FALSE_POSITIVES = 0.01
MIN_DSN_STATUS = 0.90  # measured 94% of the sisimai bounces
MIN_DSN_RECIPIENT = 0.95  # measured 99%
MIN_DSN_ORIGINAL_ID = 0.80  # measured 84%

REPLY_HEADERS = (
    b"From: person@example.com\r\n"
    b"To: me@example.org\r\n"
    b"Subject: Re: test\r\n"
    b"Message-ID: <reply-1@example.com>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
)


@cache
def _manifest(folder: Path) -> dict[str, dict[str, str]]:
    """File name -> its row (kind, action, final_recipient, form) from a source folder's
    expected.csv; empty when the folder has none."""
    listing = folder / "expected.csv"
    if not listing.is_file():
        return {}
    with listing.open(encoding="utf-8", newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def expected_kind(path: Path) -> str:
    listed = _manifest(path.parent)
    if listed:
        assert path.name in listed, f"{path} is not in its folder's expected.csv"
        return listed[path.name]["kind"]
    if path.parent.name == "flanker":
        return "bounce"
    name = path.name
    if name.startswith("rfc3834-"):
        return "auto_reply"
    if name.startswith("arf-"):
        return "feedback"
    if name.startswith("is-not-bounce-"):
        return "human"
    return "bounce"


def classify_file(path: Path) -> Classification:
    raw = path.read_bytes()
    if path.suffix == ".txt":
        raw = REPLY_HEADERS + raw
    return classify(parse_message(raw, mailbox="corpus", source_id=path.name))


@dataclass(frozen=True)
class Measured:
    machine: list[tuple[Path, Classification]]
    human_bounce_dir: list[tuple[Path, Classification]]
    replies: list[tuple[Path, Classification]]

    def share(self, items: list[tuple[Path, Classification]], ok: Callable[..., bool]) -> float:
        return sum(1 for p, c in items if ok(p, c)) / len(items)


@pytest.fixture(scope="module")
def measured() -> Measured:
    results = [(p, classify_file(p)) for p in BOUNCES]
    result = Measured(
        machine=[(p, c) for p, c in results if expected_kind(p) != "human"],
        human_bounce_dir=[(p, c) for p, c in results if expected_kind(p) == "human"],
        replies=[(p, classify_file(p)) for p in REPLIES],
    )
    sisimai_bounces = [
        c for p, c in result.machine if p.parent.name == "sisimai" and expected_kind(p) == "bounce"
    ]
    dsns = [c.dsn for c in sisimai_bounces if c.dsn is not None]
    status, recipient, original = (
        _pct(sum(1 for d in dsns if getattr(d, field)) / len(sisimai_bounces))
        for field in ("status", "final_recipient", "original_message_id")
    )
    everything = result.machine + result.human_bounce_dir
    print(
        "\nclassifier on the corpora:"
        f"\n  machine mail not human: {_pct(result.share(result.machine, _not_human))}"
        f" of {len(result.machine)}"
        f"\n  exact class (bounces/): {_pct(result.share(everything, _exact))}"
        f" of {len(everything)}"
        f"\n  human replies misread: {_pct(1 - result.share(result.replies, _is_human))}"
        f" of {len(result.replies)}"
        f"\n  sisimai bounces with dsn.status {status}, final_recipient {recipient},"
        f" original_message_id {original} of {len(sisimai_bounces)}"
    )
    return result


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _not_human(_path: Path, result: Classification) -> bool:
    return result.kind != "human"


def _is_human(_path: Path, result: Classification) -> bool:
    return result.kind == "human"


def _exact(path: Path, result: Classification) -> bool:
    return result.kind == expected_kind(path)


def _names(items: list[tuple[Path, Classification]], ok: Callable[..., bool]) -> list[str]:
    return [f"{p.parent.name}/{p.name}: {c.kind} {c.reasons}" for p, c in items if not ok(p, c)]


@pytest.mark.parametrize("source", SOURCES)
def test_every_corpus_source_is_there_with_its_licence(source: str) -> None:
    folder = CORPORA / source
    assert (folder / "LICENSE").is_file(), f"{folder}/LICENSE missing"
    assert any(folder.glob("*.eml")), f"no mail under {folder}"


def test_corpora_are_there() -> None:
    assert len(BOUNCES) >= 330
    assert len(REPLIES) >= 100
    assert (CORPORA / "bounces" / "README.md").is_file()


def test_new_sources_are_classified_as_listed(measured: Measured) -> None:
    # Every mail of the sources added with expected.csv has exactly the class listed there,
    # and none of their machine mail comes out human.
    listed = [
        (p, c) for p, c in measured.machine + measured.human_bounce_dir if _manifest(p.parent)
    ]
    assert len(listed) >= 10
    assert _names(listed, _exact) == []
    for path, result in listed:
        row = _manifest(path.parent)[path.name]
        if row["action"]:  # the bounces: their DSN as the row gives it
            assert result.dsn is not None, path.name
            assert result.dsn.action == row["action"], path.name
            assert result.dsn.final_recipient == (row["final_recipient"] or None), path.name


def test_machine_mail_is_not_human(measured: Measured) -> None:
    share = measured.share(measured.machine, _not_human)
    assert share >= MIN_MACHINE_NOT_HUMAN, _names(measured.machine, _not_human)


def test_exact_class(measured: Measured) -> None:
    everything = measured.machine + measured.human_bounce_dir
    share = measured.share(everything, _exact)
    assert share >= MIN_EXACT_CLASS, _names(everything, _exact)


def test_the_non_bounce_in_the_bounce_corpus_is_human(measured: Measured) -> None:
    assert measured.human_bounce_dir, "is-not-bounce-*.eml went missing"
    assert _names(measured.human_bounce_dir, _is_human) == []


def test_human_replies_stay_human(measured: Measured) -> None:
    misread = 1 - measured.share(measured.replies, _is_human)
    assert misread < MAX_HUMAN_FALSE_POSITIVES, _names(measured.replies, _is_human)


def test_every_flanker_file_is_a_bounce(measured: Measured) -> None:
    flanker = [(p, c) for p, c in measured.machine if p.parent.name == "flanker"]
    assert len(flanker) >= 9
    assert _names(flanker, _exact) == []


def test_dsn_coverage_on_sisimai_bounces(measured: Measured) -> None:
    bounces = [
        (p, c)
        for p, c in measured.machine
        if p.parent.name == "sisimai" and expected_kind(p) == "bounce" and c.kind == "bounce"
    ]
    dsns = [(p, c.dsn) for p, c in bounces if c.dsn is not None]
    assert len(dsns) == len(bounces), "every bounce carries a Dsn"
    with_status = [p.name for p, d in dsns if d.status]
    with_recipient = [p.name for p, d in dsns if d.final_recipient]
    with_id = [p.name for p, d in dsns if d.original_message_id]
    missing = sorted({p.name for p, _ in dsns} - set(with_status))
    assert len(with_status) / len(dsns) >= MIN_DSN_STATUS, missing
    assert len(with_recipient) / len(dsns) >= MIN_DSN_RECIPIENT
    assert len(with_id) / len(dsns) >= MIN_DSN_ORIGINAL_ID
    for _path, dsn in dsns:
        assert dsn.status is None or dsn.status[0] in "245"
        assert dsn.action in {"failed", "delayed", "delivered", "relayed", "expanded"}
        assert dsn.final_recipient is None or (
            "@" in dsn.final_recipient and dsn.final_recipient == dsn.final_recipient.lower()
        )
        assert dsn.diagnostic is None or len(dsn.diagnostic) <= 500
        assert dsn.original_message_id is None or "<" not in dsn.original_message_id


def _dsn_of(name: str, measured: Measured) -> Classification:
    found = [c for p, c in measured.machine if p.name == name]
    assert len(found) == 1, f"{name} missing from the corpus"
    return found[0]


@pytest.mark.parametrize(
    ("name", "status", "recipient"),
    [
        ("office365.eml", "5.1.10", "noname@example.com"),
        ("zed.eml", "5.1.1", "asdfasdfasdfasdfasdfasdfewrqertrtyrthsfgdfgadfqeadvxzvz@gmail.com"),
        ("lhost-qmail-09.eml", "5.7.606", "neko@example.co.jp"),  # text only, qmail
        ("lhost-exim-31.eml", "5.1.1", "kijitora@example.net"),  # text only, Exim
        ("lhost-exchange2003-04.eml", "5.1.1", "kijitora@example.com"),  # "Recipient Not Found"
        ("gmail-no-dns.eml", "5.1.2", "user@example.comm"),  # old Gmail text bounce
    ],
)
def test_known_bounces(name: str, status: str, recipient: str, measured: Measured) -> None:
    result = _dsn_of(name, measured)
    assert result.kind == "bounce"
    assert result.dsn is not None
    assert (result.dsn.status, result.dsn.final_recipient) == (status, recipient)
    assert result.dsn.permanent


def test_original_message_id_of_known_bounces(measured: Measured) -> None:
    office = _dsn_of("office365.eml", measured).dsn
    zed = _dsn_of("zed.eml", measured).dsn
    assert office is not None
    assert zed is not None
    assert office.original_message_id == "20171013111011.20866.254C2F3A4D7AA526@ninomail.com"
    assert zed.original_message_id == "20090708054735.GC7578@example.com"


def test_delay_notices(measured: Measured) -> None:
    # Gmail's delay notices say Action: delayed; flanker's delayed*.eml carry Action: failed
    # with a 4.x.x status (delayed.eml: "Cannot send message for 5 days"), so they are
    # bounces whose failure is not permanent.
    for name in ("rfc3464-55.eml", "lhost-gmail-06.eml", "no-mx.eml"):
        dsn = _dsn_of(name, measured).dsn
        assert dsn is not None
        assert dsn.action == "delayed", name
        assert not dsn.permanent, name
    for name in ("delayed.eml", "delayed-broken.eml"):
        result = _dsn_of(name, measured)
        assert result.kind == "bounce"
        assert result.dsn is not None
        assert result.dsn.status is not None
        assert result.dsn.status.startswith("4"), name
        assert not result.dsn.permanent, name

"""The shortcuts issue 22 took in reply-text scanning and the timeline snippet give the answers
the full work gives. Properties over generated text (derandomized: CI sees the same examples),
built from the lines that steer the scan: quotes, attributions, markers, prose, blanks."""

from __future__ import annotations

import re
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.core import reply_text as module
from shared.core import tokens as tokens_module
from shared.core.contracts import SNIPPET_CHARS
from shared.core.decide import _snippet
from shared.core.tokens import find_tokens

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=600,
    suppress_health_check=[HealthCheck.too_slow],
)

STEERING = [
    "",
    "   ",
    "> quoted line",
    ">> deeper",
    "| table | row |",
    ": labelled",
    "On Tue, 3 Mar 2026 at 10:00, Anna <anna@example.org> wrote:",
    "Am 03.03.2026 um 10:00 schrieb Bernd:",
    "Le mar. 3 mars 2026, Chloé a écrit :",
    "2017-11-24 16:32 GMT+01:00 Baptiste <b@example.org>:",
    "Anna <anna@example.org>",
    "wrote:",
    "WROTE -",
    "--",
    "-- ",
    "—",
    "–",
    "-- Forwarded message",
    "From : Anna",
    "-----Original Message-----",
    "From: Anna <anna@example.org>",
    "Von: Бернд",
    "Sent: Tuesday",
    "Subject: Fwd: plan",
    "---------- Forwarded message ---------",
    "Sent from my iPhone",
    "Отправлено с моего телефона",
    "________________",
    "Thanks, see below:",
    "Привет, это ответ",
    "返信します",
    "ΣΟΦΊΑ ΈΓΡΑΨΕ:",
    "the plan stands",
]
LINES = st.lists(
    st.one_of(st.sampled_from(STEERING), st.text(min_size=0, max_size=60)), max_size=25
)


def _reference_may_end(line: str) -> bool:
    """The rule `_ends` folds into one pass, as it was written per line (the specification)."""
    text = line.strip()
    if not text or text[-1] in ":：":
        return True
    end = len(text)
    while end and (text[end - 1].isspace() or text[end - 1] in "-:："):
        end -= 1
    return not end or text[:end].lower().endswith(module._END_WORDS)


@settings(FUZZ)
@given(LINES)
def test_the_one_pass_end_test_never_rules_out_a_line_the_rule_allows(lines: list[str]) -> None:
    lines = module._normalise("\n".join(lines))
    ends = module._ends("\n".join(lines))
    assert len(ends) == len(lines)
    for line, end in zip(lines, ends, strict=True):
        if line.strip() and _reference_may_end(line):
            assert end, line  # a blank line is never part of an attribution


@settings(FUZZ)
@given(LINES)
def test_the_shortcut_keeps_what_the_full_scan_keeps(lines: list[str]) -> None:
    lines = module._normalise("\n".join(lines))
    assert module._scan(lines) == module._scan(lines, shortcut=False)


MARKER_WORDS = [
    word
    for words in (
        module._FROM_WORDS,
        module._FORWARD_WORDS,
        module._DEVICE_WORDS,
        module._SEPARATOR_WORDS,
        "|".join(module._END_VERBS),
    )
    for word in words.split("|")
]
# Lines around the markers' words as mail writes them: indented, bold, dashed, in any case,
# with a colon, a verb's tail or prose after them.
HEADS = ["", " ", "\t", "\u3000", "** ", "_", "—", "–", "-- ", "---- ", "> ", "Ok "]
CASES: list[Callable[[str], str]] = [str, str.upper, str.swapcase]
TAILS = ["", ":", " : Anna", "**: x", "：", " -", ": ", " x", " my phone", ".", " ---", "  "]
MARKER_LINES = st.builds(
    lambda head, word, case, tail: head + case(word) + tail,
    st.sampled_from(HEADS),
    st.sampled_from(MARKER_WORDS),
    st.sampled_from(CASES),
    st.sampled_from(TAILS),
)


def _steers(lines: list[str]) -> bool:
    """Whether the scan's own per-line tests see a line that steers it (the full work)."""
    return (
        any(module._quotes(lines))
        or any(module._ends("\n".join(lines)))
        or any(map(module._ANY_MARKER.match, lines))
    )


def test_every_marker_line_alone_is_seen_by_the_prefilter() -> None:
    for head in HEADS:
        for word in MARKER_WORDS:
            for case in CASES:
                for tail in TAILS:
                    line = head + case(word) + tail
                    # Twice: a run of two alternative quote marks is a quote.
                    assert module._may_steer(line) or not _steers([line, line]), repr(line)
    for line in STEERING:
        assert module._may_steer(line) or not _steers([line, line]), repr(line)


@settings(FUZZ)
@given(st.lists(st.one_of(MARKER_LINES, st.sampled_from(STEERING), st.text(max_size=60))))
def test_text_the_prefilter_passes_has_no_line_that_steers_the_scan(lines: list[str]) -> None:
    # As given (trailing white space, carriage returns) and as the scan gets it (normalised).
    for text in ("\n".join(lines), "\n".join(module._normalise("\n".join(lines)))):
        split = text.split("\n")
        if not module._may_steer(text):
            assert not _steers(split)
            assert module._scan(split) == module._scan(split, shortcut=False)


def test_plain_prose_takes_the_shortcut_and_quoted_mail_does_not() -> None:
    prose = module._normalise("Hello,\n\nthe invoice is attached.\n\nAnna\n")
    assert not module._may_steer("\n".join(prose))
    assert module._scan(prose) == (["Hello,", "", "the invoice is attached.", "", "Anna"], True)
    quoted = module._normalise("Fine.\n\nOn Tue, Anna <a@example.org> wrote:\n> the plan\n")
    assert module._scan(quoted) == (["Fine."], True)


@settings(FUZZ)
@given(
    st.text(alphabet=st.sampled_from(list("ab \t\n\r\u00a0\u3000\u2028xyzé字")), max_size=4 * 700)
)
def test_the_snippet_of_a_text_head_is_the_snippet_of_the_text(text: str) -> None:
    assert _snippet(text) == " ".join(text.split())[:SNIPPET_CHARS]


def test_tokens_do_not_depend_on_how_prefixes_are_given() -> None:
    subject = "RE: [case-12] and TASK-3, (CASE 12) again, [CASEX-4]"
    answers = {
        find_tokens(subject, prefixes)
        for prefixes in (
            ["CASE", "TASK", "CASEX"],
            ["casex", "task", "case"],
            {"TASK", "CASEX", "CASE"},
        )
    }
    assert len(answers) == 1
    assert [str(t) for t in answers.pop()] == ["[CASE-12]", "[TASK-3]", "[CASEX-4]"]


@settings(FUZZ)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list(" \t\u00a0\u3000>|»:ab")), max_size=8), max_size=12
    )
)
def test_the_quote_prefilter_finds_every_quoted_line(lines: list[str]) -> None:
    # A last "> " line makes the full pass run, and changes no earlier line's answer (it
    # neither starts nor extends a run of the other markers).
    assert module._quotes(lines) == module._quotes([*lines, "> "])[:-1]


WORDS = st.lists(
    st.text(alphabet=st.sampled_from(list("ab .*(|)?\\Ωж字")), min_size=1, max_size=6).filter(
        lambda w: "|" not in w
    ),
    min_size=1,
    max_size=8,
)


@settings(FUZZ)
@given(WORDS, st.lists(st.text(alphabet=st.sampled_from(list("ab .*(Ωж字")), max_size=7)))
def test_a_factored_alternation_matches_exactly_its_words(
    words: list[str], others: list[str]
) -> None:
    pattern = re.compile(module._alternatives("|".join(words)))
    candidates = {*words, *others, *(w[:-1] for w in words), *(w + "a" for w in words)}
    for candidate in candidates:
        assert (pattern.fullmatch(candidate) is not None) == (candidate in words), candidate


def _tokens_the_full_way(subject: str, prefixes: list[str]) -> list[tuple[str, int, bool]]:
    """Every token as the pattern finds it in the folded subject (no shortcut)."""
    wanted = tuple(sorted({p.upper() for p in prefixes}, key=lambda p: (-len(p), p)))
    found: dict[tuple[str, int], tuple[str, int, bool]] = {}
    for match in tokens_module._pattern(wanted).finditer(tokens_module._fold(subject)):
        if match.group("p"):
            token = (match.group("p").upper(), int(match.group("n")), True)
        else:
            token = (match.group("bp").upper(), int(match.group("bn")), False)
        found.setdefault(token[:2], token)
    return list(found.values())


SUBJECT_PIECES = st.sampled_from(
    [
        "case",
        "CASE",
        "Case",
        "task",
        "[",
        "]",
        "(",
        ")",
        "-",
        "#",
        ":",
        " ",
        "12",
        "7",
        "Re: ",
        "ticket",
        "x",
        "_",
        "\u2013",
        "\uff3b",
        "\uff11",
        "\u212a",
        "\u017f",
        "é",
        "caSe-3",
    ]
)


@settings(FUZZ)
@given(
    st.lists(st.one_of(SUBJECT_PIECES, st.text(max_size=6)), max_size=12),
    st.sampled_from([["CASE"], ["case", "TASK"], ["K\u212aB"], ["Ticket", "T"]]),
)
def test_tokens_found_with_the_ascii_shortcut_are_those_of_the_full_work(
    pieces: list[str], prefixes: list[str]
) -> None:
    subject = "".join(pieces)
    found = [(t.prefix, t.number, t.bracketed) for t in find_tokens(subject, prefixes)]
    assert found == _tokens_the_full_way(subject, prefixes)


def test_tokens_of_folded_and_non_ascii_subjects_are_those_of_the_full_work() -> None:
    subjects = [
        "Re: [CASE-12] plan",
        "CASE\u201312 dashed",
        "\uff3bCASE\uff0d12\uff3d full width",
        "case \uff11\uff12",
        "id-3 and [ID 4]",
        "nothing here 12",
    ]
    for subject in subjects:
        for prefixes in (["CASE"], ["\u0130D"], ["K\u212aB", "ID"]):
            found = [(t.prefix, t.number, t.bracketed) for t in find_tokens(subject, prefixes)]
            assert found == _tokens_the_full_way(subject, prefixes), (subject, prefixes)
    assert find_tokens("CASE\u201312 dashed", ["CASE"])  # the fold finds it: not a shortcut
